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

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.console import repository
from gateway.console.repository import Cohort, Week

__all__ = ["Cohort", "Figures", "Week", "figures", "forget"]


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
    key = (await repository.count_purchases(session), weeks, months)
    if _cached is not None and _cached[0] == key:
        return _cached[1]
    answer = Figures(await repository.weeks(session, weeks), list(reversed(await repository.cohorts(session, months))))
    _cached = (key, answer)
    return answer


def forget() -> None:
    """Drops the kept answer (no longer needed for exactness; tests use it to start from nothing)."""
    global _cached
    _cached = None
