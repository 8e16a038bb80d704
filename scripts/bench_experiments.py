"""The experiment results query over 1,000,000 exposed customers and their purchases (goal: under 2 s).

Builds the data in SQL (generate_series) in a fresh database migrated to the gateway's schema: one experiment,
N exposed customers (arms by the same hash as everywhere, 20% holdout) and three purchases each (one before the
exposure, one within 30 days for about a third of them, one after the window), then times
`gateway.experiments.report` (the function behind `GET /v1/experiments/{id}/results`), beside what it is measured
against in the same run: counting the exposures (a floor), one pass joining them to their purchases without any
statistics, and the previous design's query (each exposure probing the purchases' index for its window). Each row
carries the CPU seconds of the database backends and this process while it ran (less moved by a busy machine than
the wall clock). Then the price of the rollup (docs/experiments.md, "Why a rollup"): single-purchase inserts of
exposed customers with the triggers that keep `experiment_outcomes`, and with them disabled.

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
from scripts.benchlib import CpuMeter, fresh_database, print_table

MIGRATIONS = Path(experiments.__file__).parent / "migrations"
CUSTOMERS = int(os.environ.get("BENCH_EXPERIMENT_CUSTOMERS", "1000000"))
EXPERIMENT = uuid.UUID("00000000-0000-4000-8000-00000000beef")
RUNS = 3
INSERTS = 2000

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
# the report's outcomes before the rollup: one probe of the purchases' index per exposure
_PROBES = text(
    """
    SELECT x.arm, count(*), count(*) FILTER (WHERE o.purchases > 0), sum(o.purchases), sum(o.revenue),
           sum(o.revenue * o.revenue)
      FROM experiment_exposures AS x
      CROSS JOIN LATERAL (
            SELECT count(*) AS purchases, coalesce(sum(p.total), 0) AS revenue
              FROM purchases AS p
             WHERE p.customer_id = x.customer_id
               AND p.occurred_at > x.exposed_at
               AND p.occurred_at <= x.exposed_at + make_interval(days => 30)
           ) AS o
     WHERE x.experiment_id = :id
     GROUP BY x.arm
    """
)
_INSERT_ONE = """
    INSERT INTO purchases (purchase_id, customer_id, body_hash, body, event_id)
    VALUES ($1, $2, 'bench', jsonb_build_object('occurred_at', '2026-01-20T12:00:00+00:00', 'total', 12.5,
                                                'currency', 'GBP'), gen_random_uuid())
"""


async def _timed(step: Callable[[], Awaitable[object]], url: str, runs: int = RUNS) -> tuple[float, float]:
    """Median wall seconds of `runs`, and the CPU seconds per run (database backends and this process)."""
    times = []
    with CpuMeter.for_database(url, own=True) as meter:
        for _ in range(runs):
            started = time.perf_counter()
            await step()
            times.append(time.perf_counter() - started)
    return statistics.median(times), meter.seconds / runs


async def _inserts(url: str, prefix: str) -> tuple[float, float]:
    """Milliseconds and CPU milliseconds per single-purchase insert (its own transaction) of an exposed customer."""
    connection = await asyncpg.connect(url, server_settings={"search_path": "gateway"})
    try:
        with CpuMeter.for_database(url, own=True) as meter:
            started = time.perf_counter()
            for n in range(INSERTS):
                await connection.execute(_INSERT_ONE, f"{prefix}-{n}", f"c{n * 397 % CUSTOMERS + 1}")
            elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    return elapsed * 1000 / INSERTS, meter.ms_per_op(INSERTS)


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
            await connection.execute("VACUUM ANALYZE experiment_outcomes")
            purchases = await connection.fetchval("SELECT count(*) FROM purchases")
            outcomes = await connection.fetchval("SELECT count(*) FROM experiment_outcomes")
        finally:
            await connection.close()
        built = time.perf_counter() - started
        database = Database(asyncpg_url, "gateway", pool_size=2)
        try:
            async with database.sessionmaker() as session:
                await session.execute(text("SET jit = off"))
                count = await _timed(lambda: session.execute(_COUNT, {"id": EXPERIMENT}), url)
                join = await _timed(lambda: session.execute(_JOIN, {"id": EXPERIMENT}), url)
                probes = await _timed(lambda: session.execute(_PROBES, {"id": EXPERIMENT}), url, runs=1)
                report = await _timed(lambda: experiments.report(session, EXPERIMENT, 30), url)
                result = await experiments.report(session, EXPERIMENT, 30)
        finally:
            await database.dispose()
        with_triggers = await _inserts(url, "with")
        connection = await asyncpg.connect(url, server_settings={"search_path": "gateway"})
        try:
            await connection.execute("ALTER TABLE purchases DISABLE TRIGGER USER")
            without = await _inserts(url, "without")
            await connection.execute("ALTER TABLE purchases ENABLE TRIGGER USER")
        finally:
            await connection.close()
    exposed = sum(a.customers_exposed for a in result.arms.values())
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\n{exposed:,} exposed customers, {purchases:,} purchases, {outcomes:,} outcome rows "
        f"(built in SQL in {built:.0f} s); load average {load}"
    )
    print_table(
        f"Experiment results over {exposed:,} exposed customers (median of {RUNS}, seconds; CPU s per run)",
        ["query", "seconds", "CPU s", "vs the report"],
        [
            ["count the exposures (floor)", *count, f"{count[0] / report[0]:.0%}"],
            ["join exposures to all their purchases, no window, no statistics", *join, f"{join[0] / report[0]:.0%}"],
            ["previous design: one index probe per exposure (1 run)", *probes, f"{probes[0] / report[0]:.0%}"],
            ["GET /v1/experiments/{id}/results: the report (goal < 2 s)", *report, "100%"],
        ],
    )
    print_table(
        f"The rollup's price: {INSERTS:,} single-purchase inserts of exposed customers, one transaction each",
        ["purchases table", "ms/insert", "CPU ms/insert", "vs without"],
        [
            ["with the outcome triggers", *with_triggers, f"{with_triggers[1] / without[1]:.2f}x CPU"],
            ["triggers disabled", *without, "1.00x"],
        ],
    )


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
