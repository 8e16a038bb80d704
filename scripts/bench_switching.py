"""Imports for a shop switching to Reciprocity: opening balances, existing codes and opt-outs through the
gateway, 10,000 lines a call, with CPU per line (all platform processes and the database's backends). Goals:
20,000 balance lines and 50,000 codes a second.

Baseline measured in the same run: a bare asyncpg COPY of the same balance lines into a plain table, the floor of
writing that many rows at all.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx
import orjson

from scripts.benchlib import CpuMeter, cpu_cell, fresh_database, platform, print_table

LINES_PER_CALL = 10_000
CALLS = 6


def balance_lines(run: str, call: int) -> bytes:
    return b"\n".join(
        orjson.dumps({"customer_id": f"m{run}-{call}-{i}", "points": 100 + i % 900, "reference": f"open-{run}"})
        for i in range(LINES_PER_CALL)
    )


def code_lines(run: str, call: int) -> bytes:
    return b"\n".join(orjson.dumps({"code": f"OLD-{run}-{call}-{i}".upper()}) for i in range(LINES_PER_CALL))


def opt_out_lines(run: str, call: int) -> bytes:
    return b"\n".join(orjson.dumps({"customer_id": f"o{run}-{call}-{i}"}) for i in range(LINES_PER_CALL))


async def through_gateway(client: httpx.AsyncClient, path: str, bodies: list[bytes]) -> tuple[float, float, int]:
    """(lines per second, CPU ms per line, lines accepted) for the bodies sent one call after another."""
    accepted = 0
    with CpuMeter.current() as meter:
        started = time.perf_counter()
        for body in bodies:
            response = await client.post(path, content=body, headers={"Content-Type": "application/x-ndjson"})
            response.raise_for_status()
            accepted += response.json()["accepted"]
        elapsed = time.perf_counter() - started
    lines = LINES_PER_CALL * len(bodies)
    return lines / elapsed, meter.ms_per_op(lines), accepted


async def copy_floor(database_url: str, run: str) -> tuple[float, float]:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "CREATE TABLE floor_balances (customer_id text, points bigint, reference text, created_at timestamptz "
            "DEFAULT now(), PRIMARY KEY (customer_id, reference))"
        )
        records = [
            (f"m{run}-{call}-{i}", 100 + i % 900, f"open-{run}") for call in range(CALLS) for i in range(LINES_PER_CALL)
        ]
        with CpuMeter.for_database(database_url, own=True) as meter:
            started = time.perf_counter()
            await connection.copy_records_to_table(
                "floor_balances", records=records, columns=["customer_id", "points", "reference"]
            )
            elapsed = time.perf_counter() - started
        return len(records) / elapsed, meter.ms_per_op(len(records))
    finally:
        await connection.close()


async def measure() -> None:
    run = uuid.uuid4().hex[:6]
    services = ("points", "survey", "coupon")
    async with fresh_database() as database_url, platform(database_url, services=services) as stack:
        client = httpx.AsyncClient(base_url=stack.url("gateway"), headers=stack.admin_headers, timeout=600)
        async with client:
            floor_rate, floor_cpu = await copy_floor(database_url, run)
            balances = await through_gateway(
                client, "/v1/points/balances:import", [balance_lines(run, c) for c in range(CALLS)]
            )
            replay = await through_gateway(
                client, "/v1/points/balances:import", [balance_lines(run, c) for c in range(2)]
            )
            campaign = await client.post(
                "/v1/coupon-campaigns",
                json={"name": f"imported {run}", "discount": {"type": "percent", "value": "10"}},
            )
            campaign.raise_for_status()
            codes_path = f"/v1/coupon-campaigns/{campaign.json()['id']}/codes:import"
            codes = await through_gateway(client, codes_path, [code_lines(run, c) for c in range(CALLS)])
            opt_outs = await through_gateway(
                client, "/v1/survey-opt-outs:import", [opt_out_lines(run, c) for c in range(CALLS)]
            )
    rows = [
        ["opening balances, new lines", balances[0], cpu_cell(balances[1]), f"{balances[0] / floor_rate:.0%}"],
        ["opening balances, replayed file", replay[0], cpu_cell(replay[1]), f"{replay[0] / floor_rate:.0%}"],
        ["existing codes, new lines", codes[0], cpu_cell(codes[1]), f"{codes[0] / floor_rate:.0%}"],
        ["opt-outs, new lines", opt_outs[0], cpu_cell(opt_outs[1]), "-"],
        ["floor: bare COPY of the balance lines", floor_rate, cpu_cell(floor_cpu), "100%"],
    ]
    print_table(
        f"imports, {LINES_PER_CALL:,} lines a call through the gateway (goals: 20,000 balance lines/s, 50,000 codes/s)",
        ["what", "lines/s", "CPU ms/line", "vs. COPY floor"],
        rows,
    )


def main() -> None:
    asyncio.run(measure())


if __name__ == "__main__":
    main()
