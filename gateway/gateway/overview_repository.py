"""The SQL of the customer overview's read model (`overview_parts`, gateway/overview.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from kit.db import Database, array_columns, own_driver_connection
from kit.json import dumps

__all__ = [
    "FetchedPart",
    "StoredPart",
    "add_due",
    "load",
    "mark_changed",
    "mark_recommendations_stale",
    "stale",
    "store",
]

_LOAD = "SELECT service, body, changed, seen, fetched_at, fresh_until, due FROM overview_parts WHERE customer_id = $1"


@dataclass(frozen=True, slots=True)
class StoredPart:
    """A customer's row for one service: its parts as last fetched, and what says whether they are current."""

    service: str
    body: dict[str, Any] | None
    changed: int
    seen: int
    fetched_at: datetime | None
    fresh_until: datetime | None
    due: list[datetime] | None


async def load(database: Database, customer_id: str) -> list[StoredPart]:
    """One statement on a connection of its own, in no transaction: a visit's read needs no BEGIN and COMMIT
    (they were a sixth of the gateway's CPU per overview)."""
    async with own_driver_connection(database) as connection:
        return [StoredPart(*row) for row in await connection.fetch(_LOAD, customer_id)]


# A later fetch never gives way to an earlier one (`fetched_at` is when each began): two refreshes finishing in
# the other order keep the newer parts. One statement for every row a visit or a refresh stores, in (customer,
# service) order so that two of them never wait on each other's rows in opposite orders.
_STORE = """
    INSERT INTO overview_parts AS p (customer_id, service, body, changed, seen, fetched_at, fresh_until)
    SELECT customer, service, CAST(body AS jsonb), seen, seen, fetched_at, fresh_until
      FROM unnest($1::varchar[], $2::varchar[], $3::text[], $4::bigint[], $5::timestamptz[], $6::timestamptz[])
           AS part(customer, service, body, seen, fetched_at, fresh_until)
     ORDER BY customer, service
    ON CONFLICT (customer_id, service) DO UPDATE
       SET body = EXCLUDED.body, seen = greatest(p.seen, EXCLUDED.seen),
           fetched_at = EXCLUDED.fetched_at, fresh_until = EXCLUDED.fresh_until,
           due = nullif(ARRAY(SELECT d FROM unnest(p.due) AS d WHERE d > EXCLUDED.fetched_at), '{}')
     WHERE p.fetched_at IS NULL OR p.fetched_at <= EXCLUDED.fetched_at
"""


@dataclass(frozen=True, slots=True)
class FetchedPart:
    """A customer's parts of one service as fetched, to store: `seen` is the row's change count they answer."""

    customer_id: str
    service: str
    body: dict[str, Any]
    seen: int
    fetched_at: datetime
    fresh_until: datetime


async def store(database: Database, parts: Sequence[FetchedPart]) -> None:
    """Store fetched parts in one statement of its own (atomic; no BEGIN and COMMIT: they and one statement a
    part were a fifth of the gateway's CPU on a visit that fetched)."""
    if not parts:
        return
    columns = array_columns(sorted(parts, key=lambda p: (p.customer_id, p.service)), FetchedPart)
    columns[2] = [dumps(body).decode() for body in columns[2]]
    async with own_driver_connection(database) as connection:
        await connection.execute(_STORE, *columns)


# Every service's row exists once anything was heard about the customer (the refresher fills the new ones), so a
# first visit finds the whole overview; then each event counts one change of its service's row.
_CREATE = text(
    """
    INSERT INTO overview_parts (customer_id, service, changed, seen)
    SELECT customer, service, 1, 0
      FROM unnest(CAST(:customers AS varchar[])) AS customer, unnest(CAST(:services AS varchar[])) AS service
     ORDER BY customer, service
    ON CONFLICT DO NOTHING
    """
)
_COUNT = text(
    """
    UPDATE overview_parts AS p SET changed = p.changed + c.n
      FROM (SELECT customer, service, count(*) AS n
              FROM unnest(CAST(:customers AS varchar[]), CAST(:services AS varchar[])) AS e(customer, service)
             GROUP BY customer, service) AS c
     WHERE p.customer_id = c.customer AND p.service = c.service
    """
)


async def mark_changed(session: AsyncSession, changes: Sequence[tuple[str, str]], services: Sequence[str]) -> None:
    """`changes`: (customer, service) per event, in order."""
    if not changes:
        return
    customers = sorted({customer for customer, _ in changes})
    await session.execute(_CREATE, {"customers": customers, "services": list(services)})
    await session.execute(_COUNT, {"customers": [c for c, _ in changes], "services": [s for _, s in changes]})


_ADD_DUE = text(
    """
    UPDATE overview_parts AS p SET due = coalesce(p.due, '{}') || d.moments
      FROM (SELECT customer, array_agg(moment ORDER BY moment) AS moments
              FROM unnest(CAST(:customers AS varchar[]), CAST(:moments AS timestamptz[])) AS e(customer, moment)
             GROUP BY customer) AS d
     WHERE p.customer_id = d.customer AND p.service = :service
    """
)


async def add_due(session: AsyncSession, service: str, moments: Sequence[tuple[str, datetime]]) -> None:
    """The rows must be fetched again after these moments (customer, moment); rows exist (`mark_changed`)."""
    if moments:
        params = {"service": service, "customers": [c for c, _ in moments], "moments": [m for _, m in moments]}
        await session.execute(_ADD_DUE, params)


_STALE = text(
    """
    SELECT customer_id, service, changed FROM overview_parts
     WHERE changed > seen
        OR due IS NOT NULL AND EXISTS (SELECT FROM unnest(due) AS d WHERE d <= now())
     ORDER BY fetched_at IS NULL, fetched_at
     LIMIT :limit
    """
)


async def stale(session: AsyncSession, limit: int) -> Sequence[Any]:
    """Rows an event made stale: those already shown before new customers' first build."""
    return (await session.execute(_STALE, {"limit": limit})).all()


_OLD_MODEL = text(
    """
    UPDATE overview_parts SET changed = changed + 1
     WHERE service = 'recommend' AND changed = seen AND CAST(body ->> 'model_version' AS bigint) < :version
    """
)


async def mark_recommendations_stale(session: AsyncSession, version: int) -> int:
    """Recommendations of an older model than `version`: the refresher fetches them again."""
    result = await session.execute(_OLD_MODEL, {"version": version})
    return int(result.rowcount)  # type: ignore[attr-defined]
