"""Points redemptions under load, next to the database's own ceiling for the same work, in the same run.

- The service's full redemption (Idempotency-Key handling off, reference check, account lock, ledger row, lot
  consumption) at 64 clients, each request a 1-point redemption with its own reference: straight to the
  service and through the gateway, spread over 1,000 accounts and all on one hot account.
- The ceiling, on the same database: pgbench running UPDATE balance + INSERT ledger row in one transaction
  (64 clients, prepared statements), and a bare asyncpg loop (64 connections) running the same transaction,
  again over 1,000 accounts and on one account.

Goal (issue 3): redemptions over 1,000 accounts at 40% of the pgbench ceiling or better.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from typing import Any

import asyncpg

from scripts.benchlib import LOAD_HEADERS, LoadResult, fresh_database, platform, print_table, result_row, run_load

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
    if shutil.which("pgbench") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT.format(accounts=accounts))
    try:
        out = subprocess.run(
            ["pgbench", "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", "2", "-T", str(int(LOAD_SECONDS)),
             "-f", script.name, "-r", database_url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    transactions = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))  # type: ignore[union-attr]
    # pgbench reports the mean latency, not percentiles; it stands in the p50 column (marked in the label)
    return LoadResult(label, transactions, 0, LOAD_SECONDS, tps, latency, float("nan"), {})


async def _asyncpg_loop(database_url: str, accounts: int, label: str) -> LoadResult:
    """64 connections, each running the same UPDATE + INSERT transaction in a closed loop."""
    connections = [await asyncpg.connect(database_url) for _ in range(CLIENTS)]
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

    try:
        await asyncio.gather(*(client(c, n) for n, c in enumerate(connections)))
    finally:
        for connection in connections:
            await connection.close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return LoadResult(label, len(latencies), 0, LOAD_SECONDS, len(latencies) / LOAD_SECONDS, pct(0.5), pct(0.99), {})


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


async def bench() -> None:
    async with fresh_database() as database_url, platform(database_url, services=["points"]) as stack:
        run = uuid.uuid4().hex[:6]
        spread = [f"bench-{run}-{n}" for n in range(ACCOUNTS)]
        hot = [f"bench-{run}-hot"]
        await _seed(database_url, [*spread, *hot])
        await _ceiling_tables(database_url)

        service, gateway = stack.url("points"), stack.url("gateway")
        internal, admin = stack.internal_headers, stack.admin_headers
        loop = asyncio.get_running_loop()

        def load(label: str, requests: list[dict[str, Any]]) -> LoadResult:
            return run_load(label, requests, concurrency=CLIENTS, duration=LOAD_SECONDS, warmup=WARMUP_SECONDS,
                            cycle=False, ok_statuses=(201,))  # fmt: skip

        pgbench_spread = await loop.run_in_executor(
            None, _pgbench, database_url, ACCOUNTS, "ceiling: pgbench UPDATE+INSERT, 1,000 accounts (p50 = mean)"
        )
        pgbench_hot = await loop.run_in_executor(
            None, _pgbench, database_url, 1, "ceiling: pgbench UPDATE+INSERT, one account (p50 = mean)"
        )
        bare_spread = await _asyncpg_loop(database_url, ACCOUNTS, "bare asyncpg loop UPDATE+INSERT, 1,000 accounts")
        bare_hot = await _asyncpg_loop(database_url, 1, "bare asyncpg loop UPDATE+INSERT, one account")

        results = [
            await loop.run_in_executor(
                None, load, "redemptions straight to the service, 1,000 accounts",
                _redemptions(service, internal, spread, "s"),
            ),
            await loop.run_in_executor(
                None, load, "redemptions straight to the service, one hot account",
                _redemptions(service, internal, hot, "sh"),
            ),
            await loop.run_in_executor(
                None, load, "redemptions through the gateway, 1,000 accounts",
                _redemptions(gateway, admin, spread, "g"),
            ),
            await loop.run_in_executor(
                None, load, "redemptions through the gateway, one hot account",
                _redemptions(gateway, admin, hot, "gh"),
            ),
        ]  # fmt: skip
        ceiling = pgbench_spread or bare_spread
        hot_ceiling = pgbench_hot or bare_hot
        rows = [result_row(r, ceiling) for r in (pgbench_spread, bare_spread) if r is not None]
        rows += [result_row(r, hot_ceiling) for r in (pgbench_hot, bare_hot) if r is not None]
        rows += [result_row(results[0], ceiling), result_row(results[1], hot_ceiling)]
        rows += [result_row(results[2], ceiling), result_row(results[3], hot_ceiling)]
        print_table(
            f"Points redemptions, {CLIENTS} clients, {LOAD_SECONDS:.0f} s each, same database, same run "
            "(vs. baseline = the pgbench ceiling for the same spread)",
            LOAD_HEADERS,
            rows,
        )
        for result in results:
            print(f"{result.label}: statuses {result.statuses}", flush=True)


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
