"""Purchases accepted per second at 64 clients and the time until all their deliveries are done.

Ceiling measured in the same run: a bare asyncpg loop writing the same rows (purchase, event, four deliveries)
in one transaction per purchase at 64 connections. (The customer overview: scripts/bench_overview.py; the
history import in bulk: scripts/bench_import.py.)
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
import httpx

from scripts.benchlib import (
    CpuMeter,
    cpu_cell,
    fresh_database,
    platform,
    print_table,
    run_load,
)
from scripts.online_retail import FULL
from scripts.replay import purchases

PURCHASES = 6000
DURATION = 10.0


async def asyncpg_ceiling(database_url: str, bodies: list[dict], seconds: float) -> tuple[float, float]:
    pool = await asyncpg.create_pool(database_url, min_size=64, max_size=64)
    async with pool.acquire() as connection:
        await connection.execute(
            "CREATE TABLE ceiling_purchases (purchase_id text PRIMARY KEY, customer_id text, body jsonb,"
            " event_id uuid);"
            "CREATE TABLE ceiling_events (id uuid PRIMARY KEY, type text, payload jsonb, created_at timestamptz"
            " DEFAULT now());"
            "CREATE TABLE ceiling_deliveries (id bigserial PRIMARY KEY, event_id uuid, consumer text,"
            " status text DEFAULT 'pending', next_attempt_at timestamptz DEFAULT now())"
        )
    done = 0
    index = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, index
        while time.perf_counter() < stop_at and index < len(bodies):
            body = bodies[index]
            index += 1
            event_id = uuid.uuid4()
            payload = json.dumps(body)
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    "INSERT INTO ceiling_purchases VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT DO NOTHING",
                    body["purchase_id"],
                    body["customer_id"],
                    payload,
                    event_id,
                )
                await connection.execute(
                    "INSERT INTO ceiling_events (id, type, payload) VALUES ($1, 'purchase.created', $2::jsonb)",
                    event_id,
                    payload,
                )
                await connection.executemany(
                    "INSERT INTO ceiling_deliveries (event_id, consumer) VALUES ($1, $2)",
                    [(event_id, c) for c in ("points", "coupon", "recommend", "survey")],
                )
            done += 1

    started = time.perf_counter()
    with CpuMeter.for_database(database_url, own=True) as meter:
        await asyncio.gather(*(worker() for _ in range(64)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return done / elapsed, meter.ms_per_op(done)


async def wait_drained(client: httpx.AsyncClient, gateway: str, timeout: float = 600) -> tuple[float, int]:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        pending = (await client.get(gateway + "/v1/admin/deliveries", params={"status": "pending", "limit": 1})).json()
        if not pending["items"]:
            failed = await client.get(gateway + "/v1/admin/deliveries", params={"status": "failed", "limit": 200})
            return time.perf_counter() - started, len(failed.json()["items"])
        await asyncio.sleep(0.5)
    raise TimeoutError("deliveries did not drain")


async def bench() -> None:
    bodies = list(purchases(FULL, PURCHASES))
    async with fresh_database() as database_url:
        ceiling, ceiling_cpu = await asyncpg_ceiling(database_url, bodies, DURATION)
        async with platform(database_url, extra_env={"OUTBOX_POLL_SECONDS": "0.2"}) as stack:
            gateway = stack.url("gateway")
            requests = [
                {"method": "POST", "url": gateway + "/v1/purchases", "headers": stack.admin_headers, "json": body}
                for body in bodies
            ]
            accepted = run_load(
                "purchases accepted (POST /v1/purchases)", requests, duration=DURATION, cycle=False, ok_statuses=(202,)
            )
            async with httpx.AsyncClient(headers=stack.admin_headers, timeout=30) as client:
                with CpuMeter.current() as drain_cpu:
                    drain_seconds, failed = await wait_drained(client, gateway)
            deliveries = accepted.requests * 4
            print_table(
                f"Purchases: {accepted.requests:,} accepted at 64 clients, then fanned out to 4 services",
                ["what", "per second", "p50 ms", "p99 ms", "errors", "CPU ms/op", "vs. ceiling"],
                [
                    ["bare asyncpg: the same rows, one transaction each (ceiling)", ceiling, "", "", 0,
                     cpu_cell(ceiling_cpu), "100%"],
                    [accepted.label, accepted.rps, accepted.p50_ms, accepted.p99_ms, accepted.errors,
                     cpu_cell(accepted.cpu_ms_per_op), f"{accepted.rps / ceiling:.0%}"],
                    [f"all {deliveries:,} deliveries done, seconds after the load ended (CPU per delivery)",
                     drain_seconds, "", "", failed, cpu_cell(drain_cpu.ms_per_op(deliveries)), ""],
                ],
            )  # fmt: skip


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
