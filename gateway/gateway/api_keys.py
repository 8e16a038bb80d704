"""Partner API keys: created by the admin, shown once, stored only as a hash, revocable."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.principals import API_KEY_PREFIX, hash_api_key, new_api_key
from gateway.tables import api_keys
from kit.errors import NotFound

_PUBLIC_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.scopes,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)


async def create(session: AsyncSession, name: str, scopes: Sequence[str]) -> dict[str, Any]:
    key = new_api_key()
    row = (
        await session.execute(
            insert(api_keys)
            .values(
                id=uuid.uuid4(),
                name=name,
                prefix=key[: len(API_KEY_PREFIX) + 6],
                key_hash=hash_api_key(key),
                scopes=list(scopes),
            )
            .returning(*_PUBLIC_COLUMNS)
        )
    ).one()
    return {**row._mapping, "key": key}


async def list_keys(session: AsyncSession, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[Any]:
    query = select(*_PUBLIC_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(func.row(api_keys.c.created_at, api_keys.c.id) > func.row(*after))
    return list((await session.execute(query)).all())


async def revoke(session: AsyncSession, key_id: uuid.UUID) -> str:
    """Returns the revoked key's hash so the caller can drop it from the authentication cache."""
    row = (
        await session.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(revoked_at=func.coalesce(api_keys.c.revoked_at, func.now()))
            .returning(api_keys.c.key_hash)
        )
    ).first()
    if row is None:
        raise NotFound("No API key with this id.")
    return str(row.key_hash)
