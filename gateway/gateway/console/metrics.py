"""The programme's figures the gateway itself holds: purchases by week and customers by first-purchase month.

Read from the gateway's own `purchases` table through its typed copy of each purchase's own time (`occurred_at`,
kept by PostgreSQL beside the body) and the index on `(customer_id, occurred_at)`: both figures are index-only
scans, never a read of the bodies (stored compressed out of line, items and all: reading a year of them cost
0.8 s where these cost 0.06 s, EXPLAIN ANALYZE in docs/benchmarks.md). The console shows them only to a key that
may read purchases (scope `purchases:write`, as `GET /v1/purchases/{id}`).

The figures are exact: each process keeps its last answer with the number of purchases it was computed from,
and a view first counts the purchases (one index-only count); purchases are only ever added (never updated or
deleted), so the same count means the same purchases and the kept answer is still the answer; any other count
computes them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["Cohort", "Figures", "Week", "figures", "forget"]


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


# per (week, customer) first, so each customer counts once a week without a DISTINCT sort
_WEEKS = text(
    """
    WITH firsts AS (
        SELECT customer_id, min(occurred_at) AS first_at FROM purchases GROUP BY customer_id
    ), per_week AS (
        SELECT date_trunc('week', p.occurred_at AT TIME ZONE 'UTC') AS week, count(*) AS purchases,
               bool_or(p.occurred_at > f.first_at) AS came_back
          FROM purchases p JOIN firsts f USING (customer_id)
         WHERE p.occurred_at > (SELECT max(occurred_at) FROM purchases) - make_interval(weeks => :weeks)
         GROUP BY 1, p.customer_id
    )
    SELECT week, sum(purchases)::bigint AS purchases, count(*) AS customers,
           count(*) FILTER (WHERE came_back) AS returning_customers
      FROM per_week GROUP BY 1 ORDER BY 1
    """
)

_COHORTS = text(
    """
    WITH per_customer AS (
        SELECT customer_id, min(occurred_at) AS first_at, count(*) AS purchases
        FROM purchases GROUP BY customer_id
    )
    SELECT date_trunc('month', first_at AT TIME ZONE 'UTC') AS month,
           count(*) AS customers,
           count(*) FILTER (WHERE purchases > 1) AS repeat_customers
    FROM per_customer GROUP BY 1 ORDER BY 1 DESC LIMIT :months
    """
)

_COUNT = text("SELECT count(*) FROM purchases")


@dataclass(frozen=True)
class Figures:
    weeks: list[Week]
    cohorts: list[Cohort]


# (purchases counted, weeks, months) -> the answer computed from exactly those purchases
_cached: tuple[tuple[int, int, int], Figures] | None = None


async def figures(session: AsyncSession, weeks: int = 26, months: int = 12) -> Figures:
    """The last `weeks` weeks with purchases (up to the latest purchase, however old: a demo replays 2011) and
    customers by the month of their first purchase with how many bought again; exact as of this view."""
    global _cached
    key = (int((await session.execute(_COUNT)).scalar_one()), weeks, months)
    if _cached is not None and _cached[0] == key:
        return _cached[1]
    week_rows = (await session.execute(_WEEKS, {"weeks": weeks})).all()
    cohort_rows = (await session.execute(_COHORTS, {"months": months})).all()
    answer = Figures(
        [Week(r.week, r.purchases, r.customers, r.returning_customers) for r in week_rows],
        [Cohort(r.month, r.customers, r.repeat_customers) for r in reversed(cohort_rows)],
    )
    _cached = (key, answer)
    return answer


def forget() -> None:
    """Drops the kept answer (no longer needed for exactness; tests use it to start from nothing)."""
    global _cached
    _cached = None
