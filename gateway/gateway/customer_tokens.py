"""Customer tokens (JWTs for mobile apps): their revocation, one token or all of a customer's at once.

A token names itself with `jti` and carries `iat`; a token is revoked when its `jti` is listed, or when it
was issued before the customer's cut-off. Both are read once per token per `TOKEN_REVOCATION_CACHE_SECONDS`
at most, so revocation takes effect at once in the gateway that revoked and within that many seconds in
the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.tables import customer_token_cutoffs, revoked_customer_tokens

__all__ = ["Revocation", "is_revoked", "purge_expired", "revoke"]


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
        revoked_at = (
            await session.execute(
                insert(revoked_customer_tokens)
                .values(token_id=token_id, customer_id=customer_id, expires_at=token_expires_at)
                .on_conflict_do_update(
                    index_elements=[revoked_customer_tokens.c.token_id],
                    set_={"revoked_at": revoked_customer_tokens.c.revoked_at},
                )
                .returning(revoked_customer_tokens.c.revoked_at)
            )
        ).scalar_one()
        return Revocation(customer_id, token_id, revoked_at)
    statement = insert(customer_token_cutoffs).values(customer_id=customer_id, not_before=func.clock_timestamp())
    not_before = (
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[customer_token_cutoffs.c.customer_id],
                set_={"not_before": statement.excluded.not_before},
            ).returning(customer_token_cutoffs.c.not_before)
        )
    ).scalar_one()
    return Revocation(customer_id, None, not_before)


async def is_revoked(session: AsyncSession, customer_id: str, token_id: str, issued_at: float) -> bool:
    listed = select(revoked_customer_tokens.c.token_id).where(revoked_customer_tokens.c.token_id == token_id)
    cutoff = select(func.extract("epoch", customer_token_cutoffs.c.not_before)).where(
        customer_token_cutoffs.c.customer_id == customer_id
    )
    row = (await session.execute(select(listed.exists(), cutoff.scalar_subquery()))).one()
    return bool(row[0]) or (row[1] is not None and issued_at < float(row[1]))


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(
        delete(revoked_customer_tokens).where(revoked_customer_tokens.c.expires_at < func.now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
