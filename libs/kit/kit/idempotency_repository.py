"""The SQL of `kit.idempotency`: the claim's advisory lock and the stored responses, in each service's schema."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kit.tables import idempotency_keys

__all__ = ["StoredResponse", "delete_older_than", "find", "insert_response", "try_lock"]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: str
    status_code: int
    headers: dict[str, Any] | None
    body: bytes


async def try_lock(session: AsyncSession, scope: str) -> bool:
    """A transaction-scoped advisory lock on `scope` (hashed): released by the commit or the rollback."""
    return bool(await session.scalar(select(func.pg_try_advisory_xact_lock(func.hashtextextended(scope, 0)))))


async def find(session: AsyncSession, caller: str, route: str, key: str) -> StoredResponse | None:
    row = (
        await session.execute(
            select(*(idempotency_keys.c[field.name] for field in fields(StoredResponse))).where(
                idempotency_keys.c.caller == caller,
                idempotency_keys.c.route == route,
                idempotency_keys.c.key == key,
            )
        )
    ).first()
    return StoredResponse(**row._mapping) if row else None


async def insert_response(session: AsyncSession, caller: str, route: str, key: str, response: StoredResponse) -> None:
    await session.execute(
        insert(idempotency_keys).values(
            caller=caller,
            route=route,
            key=key,
            request_hash=response.request_hash,
            status_code=response.status_code,
            headers=response.headers,
            body=response.body,
        )
    )


async def delete_older_than(session: AsyncSession, age: timedelta) -> int:
    result = await session.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at < func.now() - age))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
