"""Customer tokens (JWTs for mobile apps): their revocation, one token or all of a customer's at once.

A token names itself with `jti` and carries `iat`; a token is revoked when its `jti` is listed, or when it
was issued before the customer's cut-off. Both are read once per token per `TOKEN_REVOCATION_CACHE_SECONDS`
at most, so revocation takes effect at once in the gateway that revoked and within that many seconds in
the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from gateway import customer_token_repository

__all__ = ["Revocation", "forget_expired_revocations", "is_revoked", "revoke"]


@dataclass(frozen=True)
class Revocation:
    customer_id: str
    token_id: str | None
    revoked_at: datetime


async def revoke(
    session: AsyncSession, customer_id: str, token_id: str | None, token_expires_at: datetime
) -> Revocation:
    """Revoke one token (`token_id`), or every token of the customer issued until now (`token_id` None)."""
    if token_id is not None:
        revoked_at = await customer_token_repository.list_revoked(session, customer_id, token_id, token_expires_at)
        return Revocation(customer_id, token_id, revoked_at)
    return Revocation(customer_id, None, await customer_token_repository.cut_off(session, customer_id))


async def is_revoked(session: AsyncSession, customer_id: str, token_id: str, issued_at: float) -> bool:
    state = await customer_token_repository.revocation_state(session, customer_id, token_id)
    return state.listed or (state.not_before is not None and issued_at < state.not_before)


async def forget_expired_revocations(session: AsyncSession) -> int:
    """Drop the revocations of tokens past their own expiry (such a token is refused for its age anyway), so the
    list a token is checked against does not grow for ever. Returns how many were dropped."""
    return await customer_token_repository.purge_expired(session)
