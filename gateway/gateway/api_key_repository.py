"""The API keys' SQL: partner keys as stored (a hash and a display prefix, never the key itself)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.tables import api_keys

__all__ = ["ActiveKey", "ApiKeyRow", "find_active", "insert_key", "list_page", "revoke"]


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class ActiveKey:
    id: uuid.UUID
    scopes: list[str]


_COLUMNS = tuple(api_keys.c[field.name] for field in fields(ApiKeyRow))


async def insert_key(session: AsyncSession, name: str, prefix: str, key_hash: str, scopes: Sequence[str]) -> ApiKeyRow:
    statement = (
        insert(api_keys)
        .values(id=uuid.uuid4(), name=name, prefix=prefix, key_hash=key_hash, scopes=list(scopes))
        .returning(*_COLUMNS)
    )
    return ApiKeyRow(**(await session.execute(statement)).one()._mapping)


async def list_page(session: AsyncSession, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[ApiKeyRow]:
    """Oldest first, `limit + 1` rows (the extra one tells the caller a next page exists)."""
    query = select(*_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(func.row(api_keys.c.created_at, api_keys.c.id) > func.row(*after))
    return [ApiKeyRow(**row._mapping) for row in await session.execute(query)]


async def revoke(session: AsyncSession, key_id: uuid.UUID) -> str | None:
    """The key's hash, or None if there is no such key; revoking twice keeps the first time."""
    return await session.scalar(
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(revoked_at=func.coalesce(api_keys.c.revoked_at, func.now()))
        .returning(api_keys.c.key_hash)
    )


async def find_active(session: AsyncSession, key_hash: str) -> ActiveKey | None:
    row = (
        await session.execute(
            select(api_keys.c.id, api_keys.c.scopes).where(
                api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
            )
        )
    ).first()
    return ActiveKey(row.id, list(row.scopes)) if row else None
