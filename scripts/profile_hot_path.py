"""Where a hot path's CPU goes: the points service's redemptions (or the overview through the gateway) under load,
sampled with py-spy (`pip install py-spy`; not a dependency of the project), summed by function.

    python -m scripts.profile_hot_path [redemptions|overview|gateway] [seconds] [raw-output-file]

Prints the functions holding the most samples (inclusive: a function's callees count towards it), grouped by
what they belong to, so docs/benchmarks.md can say what each layer of the request path costs.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from scripts.bench_points import ACCOUNTS, _redemptions, _seed
from scripts.benchlib import fresh_database, platform, run_load

TOP = 90


def summarise(collapsed: Path) -> tuple[int, Counter[str]]:
    """py-spy's raw output: one line per distinct stack, `frame;frame;... count`; inclusive counts per frame."""
    total = 0
    inclusive: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(" (")[0]
            where = frame.split(" (")[1].split(":")[0] if " (" in frame else ""
            key = f"{name} ({where.split('site-packages/')[-1].split('/work/')[-1]})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += samples
    return total, inclusive


async def profile(kind: str, seconds: float, keep: str | None = None) -> None:
    if shutil.which("py-spy") is None and not Path(sys.executable).with_name("py-spy").exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    services = ["points"] if kind in ("redemptions", "gateway") else ["coupon", "points", "recommend", "survey"]
    async with fresh_database() as database_url, platform(database_url, services=services) as stack:
        customers = [f"profile-{n}" for n in range(ACCOUNTS)]
        target = "points" if kind == "redemptions" else "gateway"
        requests: list[dict[str, Any]]
        if kind == "redemptions":
            await _seed(database_url, customers)
            requests = _redemptions(stack.url("points"), stack.internal_headers, customers, "prof-")
        elif kind == "gateway":
            # the hop alone: the same read `make bench gateway` measures, with a partner key
            async with httpx.AsyncClient(headers=stack.admin_headers) as admin:
                created = await admin.post(
                    stack.url("gateway") + "/v1/api-keys", json={"name": "profile", "scopes": ["points:read"]}
                )
            partner = {"Authorization": f"Bearer {created.json()['key']}"}
            requests = [
                {"method": "GET", "url": f"{stack.url('gateway')}/v1/customers/{c}/points", "headers": partner}
                for c in customers
            ]
        else:
            requests = [
                {"method": "GET", "url": f"{stack.url('gateway')}/v1/customers/{c}/overview",
                 "headers": stack.admin_headers}
                for c in customers
            ]  # fmt: skip
        process = stack.processes[target].process
        assert process is not None
        with tempfile.TemporaryDirectory() as folder:
            output = Path(folder) / "profile.txt"
            load = threading.Thread(
                target=run_load,
                args=(kind, requests),
                kwargs={"duration": seconds + 2, "warmup": 1, "cycle": kind != "redemptions"},
            )
            load.start()
            await asyncio.sleep(1.5)
            await asyncio.to_thread(
                subprocess.run,
                [spy, "record", "--pid", str(process.pid), "--duration", str(int(seconds)), "--format", "raw",
                 "--output", str(output), "--nonblocking"],
                check=True, capture_output=True,
            )  # fmt: skip
            load.join()
            total, inclusive = summarise(output)
            if keep is not None:
                shutil.copy(output, keep)
    print(f"\n{kind}: {total} samples of the {target} process; inclusive share by function\n")
    print("| share | function |\n|---|---|")
    for key, samples in inclusive.most_common(TOP):
        print(f"| {samples / total:.0%} | `{key}` |")


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "redemptions"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    keep = sys.argv[3] if len(sys.argv) > 3 else None
    asyncio.run(profile(kind, seconds, keep))


if __name__ == "__main__":
    main()
