"""A shop's history imported: the whole Online Retail year through `POST /v1/purchases:batch` (files of 5,000
lines, one after another), then every delivery to the four consumers done.

Ceiling measured in the same run: COPY of the same rows (purchase, event, four deliveries each) into plain tables
by a bare asyncpg client. Goals (issue 18): at least 5,000 purchases a second accepted; the year imported and
every delivery done in under 3 minutes.

`BENCH_IMPORT_LIMIT=N` imports only the first N invoices (a quick run).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import asyncpg
import httpx
import orjson

from scripts.benchlib import CpuMeter, cpu_cell, fresh_database, platform, print_table
from scripts.online_retail import FULL
from scripts.replay import purchases

FILE_LINES = 5_000
CONSUMERS = ("points", "coupon", "recommend", "survey")


async def copy_ceiling(database_url: str, bodies: list[bytes], ids: list[tuple[str, str]]) -> tuple[float, float]:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "CREATE TABLE ceiling_purchases (purchase_id text PRIMARY KEY, customer_id text, body jsonb,"
            " event_id uuid);"
            "CREATE TABLE ceiling_events (id uuid PRIMARY KEY, payload jsonb);"
            "CREATE TABLE ceiling_deliveries (id bigserial PRIMARY KEY, event_id uuid, consumer text)"
        )
        events = [uuid.uuid4() for _ in bodies]
        started = time.perf_counter()
        with CpuMeter.for_database(database_url, own=True) as meter:
            async with connection.transaction():
                await connection.copy_records_to_table(
                    "ceiling_purchases",
                    records=[(p, c, b.decode(), e) for (p, c), b, e in zip(ids, bodies, events, strict=True)],
                )
                await connection.copy_records_to_table(
                    "ceiling_events", records=[(e, b.decode()) for e, b in zip(events, bodies, strict=True)]
                )
                await connection.copy_records_to_table(
                    "ceiling_deliveries", columns=["event_id", "consumer"],
                    records=[(e, c) for e in events for c in CONSUMERS],
                )  # fmt: skip
        seconds = time.perf_counter() - started
        return len(bodies) / seconds, meter.ms_per_op(len(bodies))
    finally:
        await connection.close()


async def drained(client: httpx.AsyncClient, timeout: float = 1800) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = (await client.get("/v1/admin/deliveries", params={"status": "pending", "limit": 1})).json()
        if not pending["items"]:
            failed = (await client.get("/v1/admin/deliveries", params={"status": "failed", "limit": 200})).json()
            return len(failed["items"])
        await asyncio.sleep(0.5)
    raise TimeoutError("deliveries did not drain")


async def bench() -> None:
    limit = int(os.environ["BENCH_IMPORT_LIMIT"]) if os.environ.get("BENCH_IMPORT_LIMIT") else None
    payloads = list(purchases(FULL, limit))
    bodies = [orjson.dumps(p) for p in payloads]
    ids = [(p["purchase_id"], p["customer_id"]) for p in payloads]
    files = [b"\n".join(bodies[i : i + FILE_LINES]) for i in range(0, len(bodies), FILE_LINES)]
    load_before = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    async with fresh_database() as database_url:
        ceiling, ceiling_cpu = await copy_ceiling(database_url, bodies, ids)
        async with platform(database_url, extra_env={"OUTBOX_POLL_SECONDS": "0.2"}) as stack:
            gateway = stack.url("gateway")
            async with httpx.AsyncClient(base_url=gateway, headers=stack.admin_headers, timeout=600) as client:
                accepted = 0
                started = time.perf_counter()
                with CpuMeter.current() as import_cpu:
                    for file in files:
                        response = await client.post(
                            "/v1/purchases:batch", content=file, headers={"Content-Type": "application/x-ndjson"}
                        )
                        response.raise_for_status()
                        accepted += response.json()["accepted"]
                import_seconds = time.perf_counter() - started
                with CpuMeter.current() as drain_cpu:
                    failed = await drained(client)
                total_seconds = time.perf_counter() - started
    deliveries = accepted * len(CONSUMERS)
    rate = accepted / import_seconds
    load_after = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print_table(
        f"The Online Retail year imported: {accepted:,} purchases ({len(files)} files of up to {FILE_LINES:,} lines), "
        f"{deliveries:,} deliveries; load average {load_before} before, {load_after} after (1/5/15 min)",
        ["what", "seconds", "per second", "CPU ms/op", "vs. ceiling", "goal"],
        [
            ["ceiling: COPY of the same rows (purchase, event, 4 deliveries), bare asyncpg",
             len(bodies) / ceiling, ceiling, cpu_cell(ceiling_cpu), "100%", ""],
            ["accepted: POST /v1/purchases:batch, files one after another (the relay delivering meanwhile)",
             import_seconds, rate, cpu_cell(import_cpu.ms_per_op(accepted)), f"{rate / ceiling:.0%}", "5,000/s"],
            [f"drained: deliveries per second from the first file to the last delivery ({failed} failed)",
             total_seconds, deliveries / total_seconds, "", "", ""],
            ["total: imported and delivered (CPU per purchase, its 4 deliveries included)", total_seconds,
             accepted / total_seconds, cpu_cell((import_cpu.seconds + drain_cpu.seconds) * 1000 / accepted), "",
             "< 180 s"],
        ],
    )  # fmt: skip


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
