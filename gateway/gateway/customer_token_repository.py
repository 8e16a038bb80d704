"""The customer tokens' SQL: revoked token ids (kept until the token would have expired) and per-customer cut-offs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.tables import customer_token_cutoffs, revoked_customer_tokens

__all__ = ["RevocationState", "cut_off", "list_revoked", "purge_expired", "revocation_state"]


@dataclass(frozen=True, slots=True)
class RevocationState:
    listed: bool
    # the customer's cut-off as seconds since the epoch (comparable with a token's `iat`); None without one
    not_before: float | None


async def list_revoked(session: AsyncSession, customer_id: str, token_id: str, expires_at: datetime) -> datetime:
    """When the token was revoked: now, or the first time if it already was."""
    revoked_at: datetime = (
        await session.execute(
            insert(revoked_customer_tokens)
            .values(token_id=token_id, customer_id=customer_id, expires_at=expires_at)
            .on_conflict_do_update(
                index_elements=[revoked_customer_tokens.c.token_id],
                set_={"revoked_at": revoked_customer_tokens.c.revoked_at},
            )
            .returning(revoked_customer_tokens.c.revoked_at)
        )
    ).scalar_one()
    return revoked_at


async def cut_off(session: AsyncSession, customer_id: str) -> datetime:
    """Every token of the customer issued until now is revoked; returns the cut-off."""
    statement = insert(customer_token_cutoffs).values(customer_id=customer_id, not_before=func.clock_timestamp())
    not_before: datetime = (
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[customer_token_cutoffs.c.customer_id],
                set_={"not_before": statement.excluded.not_before},
            ).returning(customer_token_cutoffs.c.not_before)
        )
    ).scalar_one()
    return not_before


async def revocation_state(session: AsyncSession, customer_id: str, token_id: str) -> RevocationState:
    listed = select(revoked_customer_tokens.c.token_id).where(revoked_customer_tokens.c.token_id == token_id)
    cutoff = select(func.extract("epoch", customer_token_cutoffs.c.not_before)).where(
        customer_token_cutoffs.c.customer_id == customer_id
    )
    row = (await session.execute(select(listed.exists(), cutoff.scalar_subquery()))).one()
    return RevocationState(bool(row[0]), None if row[1] is None else float(row[1]))


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(
        delete(revoked_customer_tokens).where(revoked_customer_tokens.c.expires_at < func.now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
