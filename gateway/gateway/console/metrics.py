"""The programme's figures the gateway itself holds: purchases by week and customers by first-purchase month.

Read from the gateway's own `purchases` table (a purchase's own time is `body->>'occurred_at'`); the console
shows them only to a key that may read purchases (scope `purchases:write`, as `GET /v1/purchases/{id}`).

Both figures need every purchase's time, inside a body that is stored compressed out of line (items and all): a
year of Online Retail (20,000 purchases) costs over a second to read on a busy machine. They move slowly, so each
process keeps the last answer for `CACHE_SECONDS` and the home page pays that once a minute, not per view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["CACHE_SECONDS", "Cohort", "Figures", "Week", "figures", "forget"]

CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class Week:
    start: datetime
    purchases: int
    customers: int
    returning_customers: int


@dataclass(frozen=True)
class Cohort:
    month: datetime
    customers: int
    repeat_customers: int

    @property
    def repeat_rate(self) -> float:
        return self.repeat_customers / self.customers if self.customers else 0.0


_WEEKS = text(
    """
    WITH p AS (
        SELECT customer_id, (body->>'occurred_at')::timestamptz AS at FROM purchases
    ), recent AS (
        SELECT * FROM p WHERE at > (SELECT max(at) FROM p) - make_interval(weeks => :weeks)
    ), firsts AS (
        SELECT customer_id, min(at) AS first_at FROM p
        WHERE customer_id IN (SELECT customer_id FROM recent) GROUP BY customer_id
    )
    SELECT date_trunc('week', recent.at AT TIME ZONE 'UTC') AS week,
           count(*) AS purchases,
           count(DISTINCT recent.customer_id) AS customers,
           count(DISTINCT recent.customer_id) FILTER (WHERE recent.at > firsts.first_at) AS returning_customers
    FROM recent JOIN firsts USING (customer_id)
    GROUP BY 1 ORDER BY 1
    """
)

_COHORTS = text(
    """
    WITH per_customer AS (
        SELECT customer_id, min((body->>'occurred_at')::timestamptz) AS first_at, count(*) AS purchases
        FROM purchases GROUP BY customer_id
    )
    SELECT date_trunc('month', first_at AT TIME ZONE 'UTC') AS month,
           count(*) AS customers,
           count(*) FILTER (WHERE purchases > 1) AS repeat_customers
    FROM per_customer GROUP BY 1 ORDER BY 1 DESC LIMIT :months
    """
)


@dataclass(frozen=True)
class Figures:
    weeks: list[Week]
    cohorts: list[Cohort]


_cached: tuple[float, Figures] | None = None


async def figures(session: AsyncSession, weeks: int = 26, months: int = 12) -> Figures:
    """The last `weeks` weeks with purchases (up to the latest purchase, however old: a demo replays 2011) and
    customers by the month of their first purchase with how many bought again; at most CACHE_SECONDS old."""
    global _cached
    if _cached is not None and time.monotonic() - _cached[0] < CACHE_SECONDS:
        return _cached[1]
    week_rows = (await session.execute(_WEEKS, {"weeks": weeks})).all()
    cohort_rows = (await session.execute(_COHORTS, {"months": months})).all()
    answer = Figures(
        [Week(r.week, r.purchases, r.customers, r.returning_customers) for r in week_rows],
        [Cohort(r.month, r.customers, r.repeat_customers) for r in reversed(cohort_rows)],
    )
    _cached = (time.monotonic(), answer)
    return answer


def forget() -> None:
    """Drops the kept answer (tests that add purchases and look at once)."""
    global _cached
    _cached = None
