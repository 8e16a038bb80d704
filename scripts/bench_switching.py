"""Imports for a shop switching to Reciprocity: opening balances, existing codes and opt-outs through the
gateway, 10,000 lines a call, with CPU per line (all platform processes and the database's backends) and its
split by process (gateway, the service, the database's backends). Goals: 20,000 balance lines and 50,000 codes a
second. Calls go one after another, and (the rows "2 calls in flight") two at a time, as `make import` sends them.

Baseline measured in the same run: a bare asyncpg COPY of the same balance lines into a plain table, the floor of
writing that many rows at all.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import asyncpg
import httpx
import orjson

from scripts.benchlib import CpuMeter, Stack, cpu_cell, fresh_database, platform, print_table

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


def _pid(stack: Stack, name: str) -> int:
    process = stack.processes[name].process
    assert process is not None
    return process.pid


@dataclass
class Row:
    rate: float  # lines a second
    cpu: float  # CPU ms a line, all platform processes and the database's backends
    parts: dict[str, float]  # of which, by process: gateway, the service, the database
    accepted: int


async def through_gateway(
    client: httpx.AsyncClient, stack: Stack, service: str, path: str, bodies: list[bytes], in_flight: int = 1
) -> Row:
    """The bodies sent one call after another (`in_flight` at a time, as `make import` sends all but purchases);
    CPU per line in all and by process."""
    accepted = 0
    active = CpuMeter.current()
    meters = {
        "gateway": CpuMeter(roots=[_pid(stack, "gateway")]),
        service: CpuMeter(roots=[_pid(stack, service)]),
        "database": CpuMeter(database=active.database),
    }
    for meter in meters.values():
        meter.start()
    with active:
        started = time.perf_counter()
        queue = iter(bodies)

        async def sender() -> None:
            nonlocal accepted
            for body in queue:
                response = await client.post(path, content=body, headers={"Content-Type": "application/x-ndjson"})
                response.raise_for_status()
                accepted += response.json()["accepted"]

        await asyncio.gather(*(sender() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    lines = LINES_PER_CALL * len(bodies)
    parts = {name: (meter.stop(), meter.ms_per_op(lines))[1] for name, meter in meters.items()}
    return Row(lines / elapsed, active.ms_per_op(lines), parts, accepted)


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
                client, stack, "points", "/v1/points/balances:import", [balance_lines(run, c) for c in range(CALLS)]
            )
            balances_2 = await through_gateway(
                client,
                stack,
                "points",
                "/v1/points/balances:import",
                [balance_lines(run, CALLS + c) for c in range(CALLS)],
                in_flight=2,
            )
            replay = await through_gateway(
                client, stack, "points", "/v1/points/balances:import", [balance_lines(run, c) for c in range(2)]
            )
            campaign = await client.post(
                "/v1/coupon-campaigns",
                json={"name": f"imported {run}", "discount": {"type": "percent", "value": "10"}},
            )
            campaign.raise_for_status()
            codes_path = f"/v1/coupon-campaigns/{campaign.json()['id']}/codes:import"
            codes = await through_gateway(
                client, stack, "coupon", codes_path, [code_lines(run, c) for c in range(CALLS)]
            )
            codes_2 = await through_gateway(
                client, stack, "coupon", codes_path, [code_lines(run, CALLS + c) for c in range(CALLS)], in_flight=2
            )
            codes_replay = await through_gateway(
                client, stack, "coupon", codes_path, [code_lines(run, c) for c in range(2)]
            )
            opt_outs = await through_gateway(
                client, stack, "survey", "/v1/survey-opt-outs:import", [opt_out_lines(run, c) for c in range(CALLS)]
            )
    measured = [
        ("opening balances, new lines", balances, "points"),
        ("opening balances, new lines, 2 calls in flight", balances_2, "points"),
        ("opening balances, replayed file", replay, "points"),
        ("existing codes, new lines", codes, "coupon"),
        ("existing codes, new lines, 2 calls in flight", codes_2, "coupon"),
        ("existing codes, replayed file", codes_replay, "coupon"),
        ("opt-outs, new lines", opt_outs, "survey"),
    ]
    rows: list[list[object]] = [
        [
            what,
            row.rate,
            f"{row.cpu:.3f}",
            f"{row.parts['gateway']:.3f}",
            f"{row.parts[service]:.3f}",
            f"{row.parts['database']:.3f}",
            f"{row.rate / floor_rate:.0%}",
        ]
        for what, row, service in measured
    ]
    rows.append(["floor: bare COPY of the balance lines", floor_rate, cpu_cell(floor_cpu), "-", "-", "-", "100%"])
    print_table(
        f"imports, {LINES_PER_CALL:,} lines a call through the gateway (goals: 20,000 balance lines/s, 50,000 codes/s)",
        ["what", "lines/s", "CPU ms/line", "gateway", "service", "database", "vs. COPY floor"],
        rows,
    )


def main() -> None:
    asyncio.run(measure())


if __name__ == "__main__":
    main()
