"""The held-out data set of another kind for `make eval-recommend`: MovieLens 100K (943 people, 1,682 films,
100,000 ratings; a catalogue nobody buys twice, denser, many more interactions per person than a shop).

MovieLens's licence does not allow redistributing it, so it is not copied into this repository: the `recbole`
package (MIT) ships it as an example data set inside its wheel, and this module fetches that wheel with pip
(`pip download --no-deps`, nothing is installed) into `.data/eval/` the first time and reads the ratings file
straight from the archive. Without a package index the evaluation skips this data set and says so.

F. Maxwell Harper and Joseph A. Konstan, "The MovieLens Datasets: History and Context", ACM Transactions on
Interactive Intelligent Systems 5(4), 2015, doi:10.1145/2827872. GroupLens Research, University of Minnesota.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

RECBOLE = "recbole==1.2.1"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
CACHE = Path(__file__).resolve().parents[1] / ".data" / "eval"


def _wheel() -> Path | None:
    found = sorted(CACHE.glob("recbole-1.2.1-*.whl"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(CACHE), RECBOLE],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        print(f"MovieLens 100K unavailable (pip download {RECBOLE} failed): {done.stderr.strip()[-300:]}")
        return None
    found = sorted(CACHE.glob("recbole-1.2.1-*.whl"))
    return found[0] if found else None


def ratings() -> list[tuple[str, str, float]] | None:
    """(person, film, time) for every rating, or None when the data cannot be had here."""
    wheel = _wheel()
    if wheel is None:
        return None
    with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as handle:
        lines = handle.read().decode("utf-8").splitlines()
    out = []
    for line in lines[1:]:
        user, item, _rating, timestamp = line.split("\t")
        out.append((f"u{user}", f"m{item}", float(timestamp)))
    return out
