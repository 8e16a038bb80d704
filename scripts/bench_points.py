"""Points redemptions under load, next to the database's own ceiling for the same work, in the same run.

- The service's full redemption (Idempotency-Key handling off, reference check, account lock, ledger row, lot
  consumption) at 64 clients, each request a 1-point redemption with its own reference: straight to the
  service and through the gateway, spread over 1,000 accounts and all on one hot account.
- The ceiling, on the same database: pgbench running UPDATE balance + INSERT ledger row in one transaction
  (64 clients, prepared statements), and a bare asyncpg loop (64 connections) running the same transaction,
  again over 1,000 accounts and on one account; measured before and after the service runs (the machine is
  shared and noisy, and while the service runs its pool holds connection slots the ceiling would need), and
  the mean taken as the baseline.

Goal (issue 3): redemptions over 1,000 accounts at 40% of the pgbench ceiling or better.

And the floor of our own stack (issue 18): the same endpoint in a bare FastAPI app on asyncpg, running the same
statement (scripts/floor_app.py), alternated with the service twice; goal: the service at 75% of the floor's
throughput or better, at most 1.33x its CPU per redemption. `BENCH_POINTS_FLOOR_ONLY=1` runs only that table.

And reward redemptions (issue 12) beside plain redemptions in the same run, over 1,000 customers; goal: 70% of
their throughput. `BENCH_POINTS_REWARDS_ONLY=1` runs only that table.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from scripts.benchlib import (
    LOAD_HEADERS,
    ROOT,
    CpuMeter,
    LoadResult,
    Stack,
    fresh_database,
    percentile,
    platform,
    print_table,
    result_row,
    run_load,
)
from tests.support.servers import free_port

ACCOUNTS = 1_000
CLIENTS = 64
LOAD_SECONDS = 10.0
WARMUP_SECONDS = 2.0
REQUESTS_PER_RUN = 45_000  # more than a run can use: every redemption has its own reference
START_BALANCE = 1_000_000

PGBENCH_SCRIPT = """\\set aid random(1, {accounts})
BEGIN;
UPDATE bench_accounts SET balance = balance - 1 WHERE id = :aid;
INSERT INTO bench_ledger (account_id, points, balance_after, reference) VALUES (:aid, -1, 0, 'r');
END;
"""


async def _seed(database_url: str, customers: list[str]) -> None:
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "points"})
    try:
        await connection.executemany(
            "SELECT points_credit($1, 'earn', $2, 'seed', 'bench seed', now() + interval '365 days')",
            [(customer, START_BALANCE) for customer in customers],
        )
    finally:
        await connection.close()


async def _ceiling_tables(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_accounts (id integer PRIMARY KEY, balance bigint NOT NULL);"
            "CREATE TABLE IF NOT EXISTS bench_ledger (id bigserial PRIMARY KEY, account_id integer NOT NULL,"
            " points bigint NOT NULL, balance_after bigint NOT NULL, reference text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now());"
            "TRUNCATE bench_accounts, bench_ledger;"
        )
        await connection.execute(
            f"INSERT INTO bench_accounts SELECT g, {START_BALANCE} FROM generate_series(1, {ACCOUNTS}) g"
        )
        await connection.execute("VACUUM ANALYZE bench_accounts")
    finally:
        await connection.close()


def _pgbench(database_url: str, accounts: int, label: str) -> LoadResult | None:
    """pgbench with a per-transaction log, so its p50/p99 are measured like ours."""
    if shutil.which("pgbench") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "redeem.sql"
        script.write_text(PGBENCH_SCRIPT.format(accounts=accounts))
        for attempt in range(3):
            # the database server is shared: its connection slots may be briefly taken by others
            meter = CpuMeter.for_database(database_url, reaped_children=True)
            meter.start()
            done = subprocess.run(
                ["pgbench", "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", "2", "-T", str(int(LOAD_SECONDS)),
                 "-f", str(script), "-l", f"--log-prefix={folder}/log", database_url],
                capture_output=True, text=True, cwd=folder,
            )  # fmt: skip
            meter.stop()
            if done.returncode == 0:
                break
            print(f"(pgbench attempt {attempt + 1} failed: {done.stderr.strip()[-300:]})", flush=True)
            for log in Path(folder).glob("log*"):
                log.unlink()
            time.sleep(5)
        else:
            return None
        # log lines: client_id transaction_no time_us script_no time_epoch time_us_part
        latencies = sorted(
            int(line.split()[2]) / 1000 for log in Path(folder).glob("log*") for line in log.read_text().splitlines()
        )
    tps = float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    # pgbench's CPU and its backends' over the whole run (connections included): a little more than the window
    return LoadResult(
        label, len(latencies), 0, LOAD_SECONDS, tps, percentile(latencies, 0.5), percentile(latencies, 0.99), {},
        meter.ms_per_op(len(latencies)),
    )  # fmt: skip


async def _connect_all(database_url: str) -> list[asyncpg.Connection] | None:
    connections: list[asyncpg.Connection] = []
    deadline = time.monotonic() + 30
    while len(connections) < CLIENTS:
        try:
            connections.append(await asyncpg.connect(database_url))
        except asyncpg.TooManyConnectionsError:
            # the database server is shared: wait for slots rather than measure fewer clients
            if time.monotonic() > deadline:
                for connection in connections:
                    await connection.close()
                return None
            await asyncio.sleep(0.5)
    return connections


async def _asyncpg_loop(database_url: str, accounts: int, label: str) -> LoadResult | None:
    """64 connections, each running the same UPDATE + INSERT transaction in a closed loop."""
    connections = await _connect_all(database_url)
    if connections is None:
        print(f"({label}: not enough free connection slots on the server)", flush=True)
        return None
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from = start + WARMUP_SECONDS
    stop_at = measure_from + LOAD_SECONDS

    async def client(connection: asyncpg.Connection, n: int) -> None:
        i = n
        while time.perf_counter() < stop_at:
            aid = (i % accounts) + 1
            i += CLIENTS
            sent = time.perf_counter()
            async with connection.transaction():
                await connection.execute("UPDATE bench_accounts SET balance = balance - 1 WHERE id = $1", aid)
                await connection.execute(
                    "INSERT INTO bench_ledger (account_id, points, balance_after, reference) VALUES ($1, -1, 0, 'r')",
                    aid,
                )
            done = time.perf_counter()
            if sent >= measure_from and done <= stop_at:
                latencies.append(done - sent)

    meter = CpuMeter.for_database(database_url, own=True)

    async def window() -> None:
        await asyncio.sleep(measure_from - time.perf_counter())
        meter.start()
        await asyncio.sleep(stop_at - time.perf_counter())
        meter.stop()

    try:
        await asyncio.gather(window(), *(client(c, n) for n, c in enumerate(connections)))
    finally:
        for connection in connections:
            await connection.close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return LoadResult(
        label, len(latencies), 0, LOAD_SECONDS, len(latencies) / LOAD_SECONDS, pct(0.5), pct(0.99), {},
        meter.ms_per_op(len(latencies)),
    )  # fmt: skip


def _redemptions(base: str, headers: dict[str, str], customers: list[str], tag: str) -> list[dict[str, Any]]:
    return [
        {
            "method": "POST",
            "url": f"{base}/v1/customers/{customers[i % len(customers)]}/points/redemptions",
            "headers": headers,
            "json": {"points": 1, "reference": f"{tag}-{i}"},
        }
        for i in range(REQUESTS_PER_RUN)
    ]


async def _ceilings(database_url: str, when: str) -> dict[int, tuple[LoadResult | None, LoadResult | None]]:
    """pgbench and the bare asyncpg loop, over 1,000 accounts and on one, measured while no service holds any
    connection (the database server is shared, and its connection slots are few)."""
    loop = asyncio.get_running_loop()
    found: dict[int, tuple[LoadResult | None, LoadResult | None]] = {}
    for accounts, name in ((ACCOUNTS, "1,000 accounts"), (1, "one account")):
        pgbench = await loop.run_in_executor(
            None, _pgbench, database_url, accounts, f"ceiling: pgbench UPDATE+INSERT, {name}, {when}"
        )
        bare = await _asyncpg_loop(database_url, accounts, f"bare asyncpg loop UPDATE+INSERT, {name}, {when}")
        found[accounts] = (pgbench, bare)
    return found


def _mean(label: str, results: list[LoadResult | None]) -> LoadResult | None:
    measured = [r for r in results if r is not None]
    if not measured:
        return None
    return LoadResult(
        label,
        sum(r.requests for r in measured),
        0,
        sum(r.seconds for r in measured),
        sum(r.rps for r in measured) / len(measured),
        sum(r.p50_ms for r in measured) / len(measured),
        sum(r.p99_ms for r in measured) / len(measured),
        {},
        sum(r.cpu_ms_per_op for r in measured) / len(measured),
    )


def _start_floor(database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "scripts.floor_app", str(port), database_url], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the floor app did not start")


async def floor_comparison(stack: Stack, database_url: str, customers: list[str]) -> None:
    """Redemptions straight to the points service against the floor (scripts/floor_app.py: bare FastAPI + asyncpg,
    the same statement), alternated twice in the same run; CPU counts each server process and its backends."""
    floor, floor_url = _start_floor(database_url)
    points = stack.processes["points"].process
    assert points is not None
    database = urlsplit(database_url).path.lstrip("/")
    loop = asyncio.get_running_loop()
    results: dict[str, list[LoadResult]] = {"floor": [], "service": []}
    try:
        for round_ in range(2):
            for kind, url, pid, headers in (
                ("floor", floor_url, floor.pid, {}),
                ("service", stack.url("points"), points.pid, stack.internal_headers),
            ):
                label = (
                    "floor: bare FastAPI + asyncpg, same statement"
                    if kind == "floor"
                    else "points service, straight (the kit's whole request path)"
                ) + f", run {round_ + 1}"
                requests = _redemptions(url, headers, customers, f"{kind[0]}{round_}-")
                meter = CpuMeter(roots=[pid], database=database)
                run = functools.partial(
                    run_load, label, requests, concurrency=CLIENTS, duration=LOAD_SECONDS, warmup=WARMUP_SECONDS,
                    cycle=False, ok_statuses=(201,), cpu=meter,
                )  # fmt: skip
                results[kind].append(await loop.run_in_executor(None, run))
    finally:
        floor.terminate()
        floor.wait()
    floor_mean = _mean("floor, mean", results["floor"])
    service_mean = _mean("points service, mean", results["service"])
    assert floor_mean is not None and service_mean is not None
    rows = [result_row(r, floor_mean) for r in (*results["floor"], floor_mean, *results["service"], service_mean)]
    rows.append([
        f"service vs. floor: {service_mean.rps / floor_mean.rps:.0%} of its throughput (goal 75%), "
        f"{service_mean.cpu_ms_per_op / floor_mean.cpu_ms_per_op:.2f}x its CPU per redemption (goal 1.33x)",
        "", "", "", "", "", "",
    ])  # fmt: skip
    print_table(
        f"Points redemptions against their floor, {CLIENTS} clients, 1,000 accounts, {LOAD_SECONDS:.0f} s each "
        "(vs. baseline = the floor's mean)",
        LOAD_HEADERS,
        rows,
    )


def _reward_redemptions(
    base: str, headers: dict[str, str], customers: list[str], reward_id: str, tag: str
) -> list[dict[str, Any]]:
    return [
        {
            "method": "POST",
            "url": f"{base}/v1/customers/{customers[i % len(customers)]}/reward-redemptions",
            "headers": headers,
            "json": {"reward_id": reward_id, "reference": f"{tag}-{i}"},
        }
        for i in range(REQUESTS_PER_RUN)
    ]


async def rewards_comparison(stack: Stack, database_url: str, customers: list[str]) -> None:
    """Reward redemptions (issue 12) beside plain redemptions, straight to the service, over 1,000 customers, in the
    same run, alternated twice: an item with unlimited stock (the reward row is shared, never written) and one
    with a stock (every redemption takes its unit from one row: they queue on it). Goal: 70% of the plain
    redemptions' throughput. CPU counts the points process and its database backends."""
    base, headers = stack.url("points"), stack.internal_headers
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        rewards = {}
        for kind, stock in (("unlimited", None), ("stocked", 100_000_000)):
            created = await client.post(
                "/v1/rewards", json={"name": f"bench {kind}", "kind": "item", "cost_points": 1, "stock": stock}
            )
            created.raise_for_status()
            rewards[kind] = created.json()["id"]
    points = stack.processes["points"].process
    assert points is not None
    database = urlsplit(database_url).path.lstrip("/")
    loop = asyncio.get_running_loop()
    results: dict[str, list[LoadResult]] = {"plain": [], "unlimited": [], "stocked": []}
    for round_ in range(2):
        for kind in results:
            tag = f"rw{kind[0]}{round_}"
            if kind == "plain":
                label = "plain points redemptions (1 point)"
                requests = _redemptions(base, headers, customers, tag)
            else:
                label = f"reward redemptions, an item with {'unlimited stock' if kind == 'unlimited' else 'a stock'}"
                requests = _reward_redemptions(base, headers, customers, rewards[kind], tag)
            meter = CpuMeter(roots=[points.pid], database=database)
            run = functools.partial(
                run_load, f"{label}, run {round_ + 1}", requests, concurrency=CLIENTS, duration=LOAD_SECONDS,
                warmup=WARMUP_SECONDS, cycle=False, ok_statuses=(201,), cpu=meter,
            )  # fmt: skip
            results[kind].append(await loop.run_in_executor(None, run))
    means = {kind: _mean(f"{kind}, mean", runs) for kind, runs in results.items()}
    plain = means["plain"]
    assert plain is not None
    rows = []
    for kind, runs in results.items():
        mean = means[kind]
        assert mean is not None
        rows += [result_row(r, plain) for r in (*runs, mean)]
    for kind in ("unlimited", "stocked"):
        mean = means[kind]
        assert mean is not None
        rows.append([
            f"{kind}: {mean.rps / plain.rps:.0%} of plain redemptions' throughput (goal 70%), "
            f"{mean.cpu_ms_per_op / plain.cpu_ms_per_op:.2f}x their CPU per redemption",
            "", "", "", "", "", "",
        ])  # fmt: skip
    print_table(
        f"Reward redemptions beside plain redemptions, {CLIENTS} clients, 1,000 customers, {LOAD_SECONDS:.0f} s each, "
        "straight to the service (vs. baseline = plain redemptions' mean)",
        LOAD_HEADERS,
        rows,
    )


async def bench() -> None:
    if os.environ.get("BENCH_POINTS_REWARDS_ONLY"):
        async with fresh_database() as database_url, platform(database_url, services=["points"]) as stack:
            customers = [f"rewards-{n}" for n in range(ACCOUNTS)]
            await _seed(database_url, customers)
            await rewards_comparison(stack, database_url, customers)
        return
    if os.environ.get("BENCH_POINTS_FLOOR_ONLY"):
        async with fresh_database() as database_url, platform(database_url, services=["points"]) as stack:
            customers = [f"floor-{n}" for n in range(ACCOUNTS)]
            await _seed(database_url, customers)
            await floor_comparison(stack, database_url, customers)
        return
    async with fresh_database() as database_url:
        await _ceiling_tables(database_url)
        before = await _ceilings(database_url, "before")
        results: dict[int, tuple[LoadResult, LoadResult]] = {}
        async with platform(database_url, services=["points"]) as stack:
            run = uuid.uuid4().hex[:6]
            spread = [f"bench-{run}-{n}" for n in range(ACCOUNTS)]
            hot = [f"bench-{run}-hot"]
            await _seed(database_url, [*spread, *hot])
            await floor_comparison(stack, database_url, spread)
            await rewards_comparison(stack, database_url, spread)
            service, gateway = stack.url("points"), stack.url("gateway")
            internal, admin = stack.internal_headers, stack.admin_headers
            loop = asyncio.get_running_loop()

            def load(label: str, requests: list[dict[str, Any]]) -> LoadResult:
                return run_load(label, requests, concurrency=CLIENTS, duration=LOAD_SECONDS,
                                warmup=WARMUP_SECONDS, cycle=False, ok_statuses=(201,))  # fmt: skip

            for accounts, customers, name, tag in (
                (ACCOUNTS, spread, "1,000 accounts", ""),
                (1, hot, "one hot account", "h"),
            ):
                direct = await loop.run_in_executor(
                    None,
                    load,
                    f"redemptions straight to the service, {name}",
                    _redemptions(service, internal, customers, "s" + tag),
                )
                through = await loop.run_in_executor(
                    None, load, f"redemptions through the gateway, {name}",
                    _redemptions(gateway, admin, customers, "g" + tag),
                )  # fmt: skip
                results[accounts] = (direct, through)
        after = await _ceilings(database_url, "after")

    rows: list[list[Any]] = []
    for accounts, name in ((ACCOUNTS, "1,000 accounts"), (1, "one account")):
        ceiling = _mean(f"ceiling: pgbench UPDATE+INSERT, {name} (mean of before and after)",
                        [before[accounts][0], after[accounts][0]])  # fmt: skip
        bare = _mean(f"bare asyncpg loop UPDATE+INSERT, {name} (mean)", [before[accounts][1], after[accounts][1]])
        baseline = ceiling or bare
        if baseline is None:
            raise SystemExit("no ceiling could be measured: the database server had no free connection slots")
        for pair, mean in (
            ((before[accounts][0], after[accounts][0]), ceiling),
            ((before[accounts][1], after[accounts][1]), bare),
        ):
            present = [r for r in pair if r is not None]
            rows += [result_row(r, baseline) for r in present]
            if len(present) > 1 and mean is not None:
                rows.append(result_row(mean, baseline))
        rows += [result_row(r, baseline) for r in results[accounts]]
    print_table(
        f"Points redemptions, {CLIENTS} clients, {LOAD_SECONDS:.0f} s each, same database, same run "
        "(vs. baseline = pgbench running the same UPDATE+INSERT, mean of before and after the service runs)",
        LOAD_HEADERS,
        rows,
    )
    for direct, through in results.values():
        print(f"{direct.label}: statuses {direct.statuses}; {through.label}: statuses {through.statuses}", flush=True)


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
