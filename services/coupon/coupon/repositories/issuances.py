"""Coupon rewards' keyed issuances (`reward_issuances`): one row per key, the points service's redemption id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.repositories._rows import typed

# issued (with its code), voided (asked to void before any issue), refused (the campaign could not issue)
IssuanceStatus = Literal["issued", "voided", "refused"]


@dataclass(frozen=True, slots=True)
class RewardIssuanceRow:
    status: IssuanceStatus
    code: str | None
    reason: str | None


_CLAIM = text(
    "INSERT INTO reward_issuances (key, status, campaign_id, customer_id) VALUES (:key, :status, :campaign, :customer) "
    "ON CONFLICT (key) DO NOTHING RETURNING key"
)
_GET = text("SELECT status, code, reason FROM reward_issuances WHERE key = :key")
_REFUSE = text("UPDATE reward_issuances SET status = 'refused', reason = :reason WHERE key = :key")
_SET_CODE = text("UPDATE reward_issuances SET code = :code WHERE key = :key")


async def claim(
    session: AsyncSession,
    key: uuid.UUID,
    status: IssuanceStatus,
    campaign_id: uuid.UUID | None = None,
    customer_id: str | None = None,
) -> bool:
    """Insert the key's row with this status; False when the key has one already (a concurrent call with the same
    key waits on the first's row, then reads its outcome)."""
    params = {"key": key, "status": status, "campaign": campaign_id, "customer": customer_id}
    return (await session.execute(_CLAIM, params)).first() is not None


async def get(session: AsyncSession, key: uuid.UUID) -> RewardIssuanceRow | None:
    row = (await session.execute(_GET, {"key": key})).first()
    return None if row is None else typed(RewardIssuanceRow, row)


async def refuse(session: AsyncSession, key: uuid.UUID, reason: str) -> None:
    await session.execute(_REFUSE, {"key": key, "reason": reason})


async def set_code(session: AsyncSession, key: uuid.UUID, code: str) -> None:
    await session.execute(_SET_CODE, {"key": key, "code": code})
