"""The experiment results query over 1,000,000 exposed customers and their purchases (goal: under 2 s).

Builds the data in SQL (generate_series) in a fresh database migrated to the gateway's schema: one experiment,
N exposed customers (arms by the same hash as everywhere, 20% holdout) and three purchases each (one before the
exposure, one within 30 days for about a third of them, one after the window), then times
`gateway.experiments.report` (the function behind `GET /v1/experiments/{id}/results`), beside two floors measured
in the same run: counting the exposures, and one pass joining them to their purchases without any statistics.

    python -m scripts.bench_experiments   (BENCH_EXPERIMENT_CUSTOMERS=1000000)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from sqlalchemy import text

from gateway import experiments
from kit.db import Database
from kit.experiments import arm_sql
from kit.migrations import upgrade
from scripts.benchlib import fresh_database, print_table

MIGRATIONS = Path(experiments.__file__).parent / "migrations"
CUSTOMERS = int(os.environ.get("BENCH_EXPERIMENT_CUSTOMERS", "1000000"))
EXPERIMENT = uuid.UUID("00000000-0000-4000-8000-00000000beef")
RUNS = 3

_BUILD = (
    "INSERT INTO experiments (id, name, lever_type, lever_id, holdout_percent, starts_at) "
    "VALUES ($1, 'bench', 'bonus_campaign', 'bench', 20, '2026-01-01')",
    # exposures spread over 60 days
    f"""
    INSERT INTO experiment_exposures (experiment_id, customer_id, arm, exposed_at)
    SELECT $1, 'c' || g, {arm_sql("$1::uuid", "'c' || g", "20")},
           timestamptz '2026-01-01' + make_interval(mins => (g % 86400))
      FROM generate_series(1, $2) AS g
    """,
    # three purchases per customer: 5 days before, 10 days after (one customer in three), 45 days after
    """
    INSERT INTO purchases (purchase_id, customer_id, body_hash, body, event_id)
    SELECT 'p' || g || '-' || k, 'c' || g, 'bench',
           jsonb_build_object(
               'occurred_at', to_char(timestamptz '2026-01-01' AT TIME ZONE 'UTC'
                                      + make_interval(mins => (g % 86400))
                                      + make_interval(days => (ARRAY[-5, 10, 45])[k]),
                                      'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
               'total', ((g * 7 + k * 13) % 20000) / 100.0 + 1,
               'currency', 'GBP'),
           gen_random_uuid()
      FROM generate_series(1, $1) AS g CROSS JOIN generate_series(1, 3) AS k
     WHERE k <> 2 OR g % 3 = 0
    """,
    "VACUUM ANALYZE purchases",
    "VACUUM ANALYZE experiment_exposures",
)

_COUNT = text("SELECT count(*) FROM experiment_exposures WHERE experiment_id = :id")
_JOIN = text(
    """
    SELECT count(*), sum(p.total) FROM experiment_exposures AS x
      JOIN purchases AS p ON p.customer_id = x.customer_id
     WHERE x.experiment_id = :id
    """
)


async def _timed(step: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def bench() -> None:
    async with fresh_database() as url:
        asyncpg_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
        await asyncio.to_thread(upgrade, MIGRATIONS, asyncpg_url, "gateway")
        connection = await asyncpg.connect(url, server_settings={"search_path": "gateway"})
        started = time.perf_counter()
        try:
            arguments: tuple[tuple[object, ...], ...] = ((EXPERIMENT,), (EXPERIMENT, CUSTOMERS), (CUSTOMERS,), (), ())
            for statement, values in zip(_BUILD, arguments, strict=True):
                await connection.execute(statement, *values)
            purchases = await connection.fetchval("SELECT count(*) FROM purchases")
        finally:
            await connection.close()
        built = time.perf_counter() - started
        database = Database(asyncpg_url, "gateway", pool_size=2)
        try:
            async with database.sessionmaker() as session:
                count = await _timed(lambda: session.execute(_COUNT, {"id": EXPERIMENT}))
                join = await _timed(lambda: session.execute(_JOIN, {"id": EXPERIMENT}))
                report = await _timed(lambda: experiments.report(session, EXPERIMENT, 30))
                result = await experiments.report(session, EXPERIMENT, 30)
        finally:
            await database.dispose()
    exposed = sum(a.customers_exposed for a in result.arms.values())
    print(f"\n{exposed:,} exposed customers, {purchases:,} purchases (built in SQL in {built:.0f} s)")
    print_table(
        "Experiment results over 1,000,000 exposed customers (median of 3, seconds)",
        ["query", "seconds", "vs the report"],
        [
            ["count the exposures (floor)", count, f"{count / report:.0%}"],
            ["join exposures to all their purchases, no window, no statistics", join, f"{join / report:.0%}"],
            ["GET /v1/experiments/{id}/results: the report (goal < 2 s)", report, "100%"],
        ],
    )


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
