"""Honest statistics, shown on real data: A/A tests and an injected effect on the replayed Online Retail year.

On a replayed history no reward can change what the customers did, so any experiment over it is an A/A test.
This loads the year's invoices (data/online-retail/) into the gateway's purchases, then for each of N experiment
ids (so N different splits) exposes every customer at their first purchase before 2011-10-01, as a year-long
lever would, and computes the report with the gateway's own results query and statistics
(`gateway.experiments.report`). About 5% of them should come out significant.

Then it injects a known effect: in each experiment, a treated customer who did not come back within the window
comes back (a purchase 10 days after exposure) with probability `lift` (decided by a hash of the experiment and
the customer: fixed, seeded by the experiment id). The share of experiments that detect it should match the
power the two-proportion z-test has for that effect at those arm sizes.

    python -m scripts.experiment_replay --database-url postgresql://... [--experiments 200] [--lift 0.05]

The database must hold the gateway's schema (a `make run` database, or the tests' one); the rows this adds are
removed at the end. Used by tests/experiments/test_replay_statistics.py and for the figures in
docs/experiments.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
from sqlalchemy import text

from gateway import experiments
from kit.db import Database
from kit.experiments import arm_sql
from scripts.online_retail import FULL, invoices

PREFIX = "aa-"
EXPOSED_BEFORE = "2011-10-01T00:00:00+00:00"
WINDOW_DAYS = 30
HOLDOUT_PERCENT = 50


@dataclass(frozen=True)
class Figures:
    experiments: int
    customers: int
    baseline_repeat_rate: float
    aa_significant_repeat: int
    aa_significant_revenue: int
    injected_lift: float
    injected_detected: int
    expected_power: float

    @staticmethod
    def interval(successes: int, trials: int) -> tuple[float, float]:
        """Wilson 95% interval of a rate."""
        z = 1.959963984540054
        p = successes / trials
        centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
        half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
        return centre - half, centre + half


async def load_year(url: str, path: Path = FULL) -> int:
    """The year's invoices as purchases of customers `aa-<id>` (apart from anything else in the database)."""
    rows = []
    for invoice in invoices(path):
        total = sum((row.unit_price * row.quantity for row in invoice.rows), start=0)
        body = {
            "purchase_id": f"{PREFIX}{invoice.invoice}",
            "customer_id": f"{PREFIX}{invoice.customer_id}",
            "occurred_at": invoice.occurred_at.isoformat(),
            "currency": "GBP",
            "total": f"{total:.2f}",
        }
        encoded = json.dumps(body)
        rows.append(
            (
                body["purchase_id"],
                body["customer_id"],
                hashlib.sha256(encoded.encode()).hexdigest(),
                encoded,
                uuid.uuid4(),
            )
        )
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DELETE FROM gateway.purchases WHERE purchase_id LIKE 'aa-%'")
        await connection.copy_records_to_table(
            "purchases",
            schema_name="gateway",
            records=rows,
            columns=["purchase_id", "customer_id", "body_hash", "body", "event_id"],
        )
    finally:
        await connection.close()
    return len(rows)


_EXPOSE = text(
    f"""
    INSERT INTO experiment_exposures (experiment_id, customer_id, arm, exposed_at)
    SELECT CAST(:id AS uuid), customer_id, {arm_sql("CAST(:id AS uuid)", "customer_id", str(HOLDOUT_PERCENT))},
           min(occurred_at)
      FROM purchases
     WHERE customer_id LIKE 'aa-%' AND occurred_at < CAST(:before AS timestamptz)
     GROUP BY customer_id
    """
)

# The injected effect: treated customers without a return come back 10 days after exposure, with probability
# :lift, decided by a hash of the experiment and the customer (uniform in [0, 1)).
_INJECT = text(
    """
    INSERT INTO purchases (purchase_id, customer_id, body_hash, body, event_id)
    SELECT 'aa-injected-' || md5(x.experiment_id::text || x.customer_id), x.customer_id, 'injected',
           jsonb_build_object('occurred_at', to_char((x.exposed_at + interval '10 days') AT TIME ZONE 'UTC',
                                                    'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                              'total', '20.00', 'currency', 'GBP'),
           gen_random_uuid()
      FROM experiment_exposures AS x
     WHERE x.experiment_id = CAST(:id AS uuid) AND x.arm = 'treatment'
       AND NOT EXISTS (SELECT 1 FROM purchases AS p
                        WHERE p.customer_id = x.customer_id AND p.occurred_at > x.exposed_at
                          AND p.occurred_at <= x.exposed_at + make_interval(days => :window))
       AND ('x' || substr(md5('inject:' || x.experiment_id::text || ':' || x.customer_id), 1, 8))::bit(32)::bigint
           < CAST(:lift AS double precision) * 4294967296
    """
)


def power(p_h: float, lift: float, n_t: int, n_h: int) -> float:
    """Power of the two-sided 5% two-proportion test when the treatment's rate is p_h + lift * (1 - p_h)."""
    p_t = p_h + lift * (1 - p_h)
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_h * (1 - p_h) / n_h)
    shift = (p_t - p_h) / se
    normal = lambda v: 0.5 * math.erfc(-v / math.sqrt(2))  # noqa: E731
    return normal(shift - 1.959963984540054) + normal(-shift - 1.959963984540054)


async def run(url: str, count: int = 200, lift: float = 0.05, *, load: bool = True) -> Figures:
    if load:
        await load_year(url)
    database = Database(url.replace("postgresql://", "postgresql+asyncpg://", 1), "gateway", pool_size=2)
    ids = [uuid.UUID(int=0x5EED_0000 + i) for i in range(count)]
    aa_repeat = aa_revenue = detected = 0
    powers: list[float] = []
    customers = 0
    baseline = 0.0
    try:
        for experiment_id in ids:
            # one transaction per experiment, rolled back: nothing of it stays
            async with database.sessionmaker() as session:
                await session.execute(
                    text(
                        "INSERT INTO experiments (id, name, lever_type, lever_id, holdout_percent, starts_at, "
                        "stopped_at) VALUES (:id, 'A/A on the Online Retail year', 'bonus_campaign', :lever, :h, "
                        "'2010-12-01', now())"
                    ),
                    {"id": experiment_id, "lever": f"aa-{experiment_id}", "h": HOLDOUT_PERCENT},
                )
                await session.execute(_EXPOSE, {"id": experiment_id, "before": datetime.fromisoformat(EXPOSED_BEFORE)})
                report = await experiments.report(session, experiment_id, WINDOW_DAYS)
                t, h = report.arms["treatment"], report.arms["holdout"]
                customers = t.customers_exposed + h.customers_exposed
                baseline = (t.customers_returned + h.customers_returned) / customers
                assert report.lift.repeat_rate is not None and report.lift.revenue_per_customer is not None
                aa_repeat += report.lift.repeat_rate.significant
                aa_revenue += report.lift.revenue_per_customer.significant
                powers.append(power(h.repeat_rate, lift, t.customers_exposed, h.customers_exposed))
                await session.execute(_INJECT, {"id": experiment_id, "window": WINDOW_DAYS, "lift": lift})
                injected = await experiments.report(session, experiment_id, WINDOW_DAYS)
                assert injected.lift.repeat_rate is not None
                detected += injected.lift.repeat_rate.significant and injected.lift.repeat_rate.absolute > 0
                await session.rollback()
    finally:
        await database.dispose()
        if load:
            connection = await asyncpg.connect(url)
            try:
                await connection.execute("DELETE FROM gateway.purchases WHERE purchase_id LIKE 'aa-%'")
            finally:
                await connection.close()
    return Figures(
        experiments=count,
        customers=customers,
        baseline_repeat_rate=baseline,
        aa_significant_repeat=aa_repeat,
        aa_significant_revenue=aa_revenue,
        injected_lift=lift,
        injected_detected=detected,
        expected_power=sum(powers) / len(powers),
    )


def describe(figures: Figures) -> str:
    n = figures.experiments

    def rate(k: int) -> str:
        low, high = Figures.interval(k, n)
        return f"{k}/{n} = {k / n:.1%} (95% interval {low:.1%}-{high:.1%})"

    return "\n".join(
        [
            f"{n} experiments over {figures.customers} customers (exposed at their first purchase before 2011-10-01,"
            f" {WINDOW_DAYS}-day window, {HOLDOUT_PERCENT}% holdout); repeat rate {figures.baseline_repeat_rate:.1%}",
            f"A/A, repeat rate significant at 5%:          {rate(figures.aa_significant_repeat)}",
            f"A/A, revenue per customer significant at 5%: {rate(figures.aa_significant_revenue)}",
            f"Injected effect ({figures.injected_lift:.0%} of treated non-returners come back): detected "
            f"{rate(figures.injected_detected)}; expected power {figures.expected_power:.1%}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.experiment_replay", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--lift", type=float, default=0.05)
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.database_url, args.experiments, args.lift))
    print(describe(figures))


if __name__ == "__main__":
    main()
