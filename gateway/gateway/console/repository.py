"""The console's SQL: its sessions (joined to the API key they stand for) and the programme's figures read from the
gateway's `purchases` (index-only scans of `(customer_id, occurred_at)`: see console/metrics.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.tables import api_keys, console_sessions

__all__ = [
    "Cohort",
    "SessionRow",
    "Week",
    "cohorts",
    "count_purchases",
    "delete_expired_sessions",
    "delete_session",
    "find_session",
    "insert_session",
    "touch_session",
    "weeks",
]


@dataclass(frozen=True, slots=True)
class SessionRow:
    token_hash: str
    principal_kind: str
    api_key_id: uuid.UUID | None
    admin_fingerprint: str | None
    csrf_token: str
    last_seen_at: datetime
    expires_at: datetime
    # the partner key's, None for the admin or once the key is gone
    scopes: list[str] | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Week:
    start: datetime
    purchases: int
    customers: int
    returning_customers: int


@dataclass(frozen=True, slots=True)
class Cohort:
    month: datetime
    customers: int
    repeat_customers: int

    @property
    def repeat_rate(self) -> float:
        return self.repeat_customers / self.customers if self.customers else 0.0


_SESSION_COLUMNS = tuple(
    api_keys.c[field.name] if field.name in ("scopes", "revoked_at") else console_sessions.c[field.name]
    for field in fields(SessionRow)
)


async def insert_session(
    session: AsyncSession,
    *,
    token_hash: str,
    principal_kind: str,
    api_key_id: str | None,
    admin_fingerprint: str | None,
    csrf_token: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    await session.execute(
        insert(console_sessions).values(
            token_hash=token_hash,
            principal_kind=principal_kind,
            api_key_id=api_key_id,
            admin_fingerprint=admin_fingerprint,
            csrf_token=csrf_token,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
        )
    )


async def delete_expired_sessions(session: AsyncSession, now: datetime) -> None:
    await session.execute(delete(console_sessions).where(console_sessions.c.expires_at < now))


async def find_session(session: AsyncSession, token_hash: str) -> SessionRow | None:
    row = (
        await session.execute(
            select(*_SESSION_COLUMNS)
            .select_from(console_sessions.outerjoin(api_keys, api_keys.c.id == console_sessions.c.api_key_id))
            .where(console_sessions.c.token_hash == token_hash)
        )
    ).first()
    return SessionRow(**row._mapping) if row else None


async def touch_session(session: AsyncSession, token_hash: str, now: datetime) -> None:
    await session.execute(
        update(console_sessions).where(console_sessions.c.token_hash == token_hash).values(last_seen_at=now)
    )


async def delete_session(session: AsyncSession, token_hash: str) -> None:
    await session.execute(delete(console_sessions).where(console_sessions.c.token_hash == token_hash))


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
    SELECT week AS start, sum(purchases)::bigint AS purchases, count(*) AS customers,
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


async def count_purchases(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM purchases"))).scalar_one())


async def weeks(session: AsyncSession, weeks: int) -> list[Week]:
    """The last `weeks` weeks up to the latest purchase, oldest first."""
    return [Week(**row._mapping) for row in await session.execute(_WEEKS, {"weeks": weeks})]


async def cohorts(session: AsyncSession, months: int) -> list[Cohort]:
    """Customers by the month of their first purchase, the latest `months` months, newest first."""
    return [Cohort(**row._mapping) for row in await session.execute(_COHORTS, {"months": months})]
