"""Partner API keys: created by the admin, shown once, stored only as a hash, revocable."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from gateway import api_key_repository
from gateway.api_key_repository import ApiKeyRow
from gateway.principals import API_KEY_PREFIX, hash_api_key, new_api_key
from kit.errors import NotFound

__all__ = ["CreatedKey", "create", "list_keys", "revoke"]


@dataclass(frozen=True, slots=True)
class CreatedKey(ApiKeyRow):
    """A new key, with the secret that is shown only in the answer to its creation."""

    key: str


async def create(session: AsyncSession, name: str, scopes: Sequence[str]) -> CreatedKey:
    key = new_api_key()
    row = await api_key_repository.insert_key(session, name, key[: len(API_KEY_PREFIX) + 6], hash_api_key(key), scopes)
    return CreatedKey(**asdict(row), key=key)


async def list_keys(session: AsyncSession, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[ApiKeyRow]:
    return await api_key_repository.list_page(session, limit, after)


async def revoke(session: AsyncSession, key_id: uuid.UUID) -> str:
    """Returns the revoked key's hash so the caller can drop it from the authentication cache."""
    key_hash = await api_key_repository.revoke(session, key_id)
    if key_hash is None:
        raise NotFound("No API key with this id.")
    return key_hash
