"""`make import`: bring a shop's history and its members' standing into a running platform.

    python -m scripts.importer KIND FILE [--campaign ID] [--map ours=theirs ...] [--url URL] [--key KEY]

KIND is `purchases`, `balances`, `codes` (needs `--campaign`) or `opt-outs`; FILE is NDJSON (`.ndjson`, `.jsonl`)
or CSV with a header, either gzipped or not. `--map points=Balance` reads our field `points` from the file's
column `Balance`; columns that are neither ours nor mapped are left out. A UCI Online Retail file (line items
with `InvoiceNo`, `StockCode`, ...) is recognised as such and grouped into purchases, one per invoice.

The file is streamed in chunks of at most 5,000 lines (the endpoints take 10,000) with a progress bar, the next
chunk read while the platform takes the last (purchases one call at a time, in the file's order; the other kinds
two calls in flight); each chunk is retried on a network error, 429 or 5xx. Every line is idempotent by its own
identifier, so the same command can be run again after a failure and doubles nothing. Rejected lines are printed
with the file's own line numbers, and the exit status is 1 when any line was rejected, 2 when the platform could
not be reached.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from tqdm import tqdm

from scripts.online_retail import invoices
from scripts.replay import purchase_payload

ROOT = Path(__file__).resolve().parents[1]
SECRETS = ROOT / ".data" / "secrets.env"
CHUNK_LINES = int(os.environ.get("IMPORT_CHUNK_LINES", "5000"))  # smaller only to test several chunks
CHUNK_BYTES = 16 * 1024 * 1024
ATTEMPTS = 6

ENDPOINTS = {
    "purchases": "/v1/purchases:batch",
    "balances": "/v1/points/balances:import",
    "codes": "/v1/coupon-campaigns/{campaign}/codes:import",
    "opt-outs": "/v1/survey-opt-outs:import",
}
FIELDS = {
    "purchases": ("purchase_id", "customer_id", "email", "occurred_at", "currency", "total", "items"),
    "balances": ("customer_id", "points", "reference", "expires_at", "qualifying_points", "description"),
    "codes": ("code", "customer_id", "redeemed"),
    "opt-outs": ("customer_id", "email"),
}
ONLINE_RETAIL_HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]


class ImportFailed(Exception):
    """The platform could not take a chunk after every retry."""


def admin_key(explicit: str | None = None) -> str | None:
    """`--key`, else LOYALTY_ADMIN_KEY, else the one `make run` stored in `.data/secrets.env`."""
    if explicit:
        return explicit
    if os.environ.get("LOYALTY_ADMIN_KEY"):
        return os.environ["LOYALTY_ADMIN_KEY"]
    if SECRETS.exists():
        for line in SECRETS.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "LOYALTY_ADMIN_KEY" and value.strip():
                return value.strip().strip("'\"")
    return None


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _is_csv(path: Path) -> bool:
    return path.name.removesuffix(".gz").endswith(".csv")


def records(
    path: Path, kind: str, mapping: dict[str, str], reference_prefix: str | None = None
) -> Iterator[tuple[int, dict[str, Any] | bytes]]:
    """(the file's line number, the record) for every line; a line that does not parse is passed on as bytes,
    so the platform reports it like any other bad line."""
    if _is_csv(path):
        with _open(path) as handle:
            header = next(csv.reader([handle.readline()]), [])
        if header[: len(ONLINE_RETAIL_HEADER)] == ONLINE_RETAIL_HEADER:
            if kind != "purchases":
                raise SystemExit("An Online Retail file holds purchases: use KIND=purchases.")
            for number, invoice in enumerate(invoices(path), start=2):
                yield number, purchase_payload(invoice)
            return
        with _open(path) as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                record = _mapped({k: v for k, v in row.items() if v not in ("", None)}, kind, mapping)
                yield reader.line_num, _with_reference(record, reference_prefix)
        return
    with _open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield number, line.strip().encode()
                continue
            if not isinstance(value, dict):
                yield number, line.strip().encode()
                continue
            yield number, _with_reference(_mapped(value, kind, mapping), reference_prefix)


def _mapped(row: dict[str, Any], kind: str, mapping: dict[str, str]) -> dict[str, Any]:
    ours = FIELDS[kind]
    out = {name: row[theirs] for name, theirs in mapping.items() if theirs in row}
    for name in ours:
        if name not in out and name in row:
            out[name] = row[name]
    return out


def _with_reference(record: dict[str, Any], prefix: str | None) -> dict[str, Any]:
    """Exports of other programmes carry a balance per member and no reference of their own: one opening
    balance per customer, named by the prefix, keeps a second run idempotent."""
    if prefix is not None and "reference" not in record and isinstance(record.get("customer_id"), str):
        return {**record, "reference": f"{prefix}{record['customer_id']}"[:64]}
    return record


@dataclass
class Totals:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, list[dict[str, str]]]] = field(default_factory=list)


def _post(client: httpx.Client, path: str, body: bytes) -> dict[str, Any]:
    delay = 1.0
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = client.post(path, content=body, headers={"Content-Type": "application/x-ndjson"})
        except httpx.TransportError as exc:
            if attempt == ATTEMPTS:
                raise ImportFailed(f"{path}: {exc}") from exc
        else:
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
            if (response.status_code != 429 and response.status_code < 500) or attempt == ATTEMPTS:
                raise ImportFailed(f"{path} answered {response.status_code}: {response.text[:500]}")
            delay = float(response.headers.get("Retry-After", delay))
        time.sleep(delay)
        delay = min(delay * 2, 30.0)
    raise ImportFailed(path)


def run(
    client: httpx.Client,
    kind: str,
    path: Path,
    endpoint: str,
    mapping: dict[str, str],
    reference_prefix: str | None = None,
) -> Totals:
    totals = Totals()
    chunk: list[bytes] = []
    numbers: list[int] = []
    size = 0
    # Calls in flight: the next chunk is read and encoded while the platform takes the last one. Purchases keep
    # one call at a time, so they are accepted in the file's order (each customer's purchases in turn); the other
    # kinds keep two, so the platform parses one call while the database writes the other (two calls touching
    # the same members or campaign take turns on its rows, so a line in both counts once).
    in_flight = 1 if kind == "purchases" else 2
    pending: deque[tuple[Future[dict[str, Any]], list[int]]] = deque()

    def account(future: Future[dict[str, Any]], lines: list[int]) -> None:
        report = future.result()
        totals.accepted += report["accepted"]
        totals.duplicates += report["duplicates"]
        totals.rejected += [(lines[r["line"] - 1], r["errors"]) for r in report["rejected"]]

    with (
        ThreadPoolExecutor(max_workers=in_flight) as pool,
        tqdm(unit=" lines", desc=f"import {kind}", file=sys.stderr, mininterval=0.5) as progress,
    ):

        def send() -> None:
            nonlocal chunk, numbers, size
            while len(pending) >= in_flight:
                account(*pending.popleft())
            pending.append((pool.submit(_post, client, endpoint, b"\n".join(chunk) + b"\n"), numbers))
            chunk, numbers, size = [], [], 0

        for number, record in records(path, kind, mapping, reference_prefix):
            line = record if isinstance(record, bytes) else orjson.dumps(record)
            if chunk and (len(chunk) >= CHUNK_LINES or size + len(line) > CHUNK_BYTES):
                send()
            chunk.append(line)
            numbers.append(number)
            size += len(line) + 1
            progress.update(1)
        if chunk:
            send()
        while pending:
            account(*pending.popleft())
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make import", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(ENDPOINTS))
    parser.add_argument("file", type=Path)
    parser.add_argument("--campaign", help="the coupon campaign that receives the codes (KIND=codes)")
    parser.add_argument("--map", action="append", default=[], metavar="OURS=THEIRS", help="read a field from a column")
    parser.add_argument(
        "--reference-prefix",
        metavar="PREFIX",
        help="KIND=balances: a line without a reference gets PREFIX + customer_id (one opening balance per member)",
    )
    parser.add_argument("--url", default=os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", help="the admin key (default: LOYALTY_ADMIN_KEY or .data/secrets.env)")
    args = parser.parse_args(argv)
    if args.kind == "codes" and not args.campaign:
        parser.error("KIND=codes needs CAMPAIGN=<campaign id>")
    if not args.file.exists():
        parser.error(f"no such file: {args.file}")
    mapping = {}
    for pair in args.map:
        ours, sep, theirs = pair.partition("=")
        if not sep or ours not in FIELDS[args.kind]:
            parser.error(f"--map {pair}: expected OURS=THEIRS with OURS one of {', '.join(FIELDS[args.kind])}")
        mapping[ours] = theirs
    key = admin_key(args.key)
    if key is None:
        parser.error("no admin key: pass --key, set LOYALTY_ADMIN_KEY, or start the platform with `make run` first")
    endpoint = ENDPOINTS[args.kind].format(campaign=args.campaign)
    started = time.monotonic()
    with httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
        try:
            totals = run(client, args.kind, args.file, endpoint, mapping, args.reference_prefix)
        except ImportFailed as exc:
            print(f"import stopped: {exc}\nRun the same command again: lines already taken count as duplicates.")
            return 2
    for number, errors in totals.rejected:
        reasons = "; ".join(f"{e.get('field', '?')}: {e.get('message', '')}" for e in errors)
        print(f"line {number}: {reasons}")
    elapsed = time.monotonic() - started
    print(
        f"{args.kind}: {totals.accepted} accepted, {totals.duplicates} duplicates, {len(totals.rejected)} rejected "
        f"in {elapsed:.1f} s"
    )
    return 1 if totals.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
