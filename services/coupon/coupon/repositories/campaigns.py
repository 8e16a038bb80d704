"""Campaign rows: their definition, their counters (codes reserved, generated, issued; the issue cursor) and the
code formats every campaign uses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.code_format import Charset, CodeFormat
from coupon.repositories._rows import columns, names, typed
from coupon.schemas import DiscountType


@dataclass(frozen=True, slots=True)
class NewCampaign:
    id: uuid.UUID
    name: str
    discount_type: DiscountType
    discount_value: Decimal
    currency: str | None
    max_discount: Decimal | None
    code_prefix: str
    code_length: int
    charset: Charset
    per_code_limit: int
    per_customer_limit: int
    total_limit: int | None
    min_order_total: Decimal | None
    categories: list[str]
    valid_from: datetime | None
    valid_until: datetime | None


@dataclass(frozen=True, slots=True)
class CampaignRow(NewCampaign):
    """A stored campaign: what it was created with, and its state."""

    active: bool
    # standing redemptions, kept only when total_limit is set
    uses: int
    # codes stored, codes assigned to a customer, sequence numbers promised (jobs reserve their range up front)
    generated: int
    issued: int
    reserved: int
    issue_cursor: int  # where the next unassigned code is looked for
    created_at: datetime
    updated_at: datetime

    @property
    def format(self) -> CodeFormat:
        return CodeFormat(self.code_prefix, self.code_length, self.charset)


CAMPAIGN_COLUMNS = columns(CampaignRow, "k")
_NEW = names(NewCampaign)

_INSERT = text(
    f"INSERT INTO campaigns AS k ({', '.join(_NEW)}) VALUES ({', '.join(':' + n for n in _NEW)}) "
    f"RETURNING {CAMPAIGN_COLUMNS}"
)
_SELECT = f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns k WHERE k.id = :id"
_GET = text(_SELECT)
_LOCK = text(_SELECT + " FOR UPDATE")
_PAGE = text(
    f"""
    SELECT {CAMPAIGN_COLUMNS} FROM campaigns k
     WHERE (CAST(:after_at AS timestamptz) IS NULL OR (k.created_at, k.id) > (:after_at, CAST(:after_id AS uuid)))
       AND (CAST(:active AS boolean) IS NULL OR k.active = :active)
     ORDER BY k.created_at, k.id LIMIT :limit
    """
)
# The columns a PATCH may change (CampaignPatch's fields): a SET clause is only ever built from these.
PATCHABLE = frozenset({"name", "active", "valid_until"})


async def insert(session: AsyncSession, new: NewCampaign) -> CampaignRow:
    values = {name: getattr(new, name) for name in _NEW}
    return typed(CampaignRow, (await session.execute(_INSERT, values)).one())


async def get(session: AsyncSession, campaign_id: uuid.UUID, *, lock: bool = False) -> CampaignRow | None:
    """The campaign, its row locked until the transaction ends when `lock` (the row that carries its counters)."""
    row = (await session.execute(_LOCK if lock else _GET, {"id": campaign_id})).first()
    return None if row is None else typed(CampaignRow, row)


async def page(
    session: AsyncSession, after: tuple[datetime, uuid.UUID] | None, active: bool | None, limit: int
) -> list[CampaignRow]:
    """Campaigns in creation order after the key `after` (created_at, id)."""
    after_at, after_id = after or (None, None)
    params = {"after_at": after_at, "after_id": after_id, "active": active, "limit": limit}
    return [typed(CampaignRow, row) for row in await session.execute(_PAGE, params)]


async def update(session: AsyncSession, campaign_id: uuid.UUID, changes: dict[str, Any]) -> None:
    unknown = set(changes) - PATCHABLE
    if unknown:
        raise ValueError(f"not patchable: {sorted(unknown)}")
    sets = ", ".join(f"{name} = :{name}" for name in changes)
    await session.execute(
        text(f"UPDATE campaigns SET {sets}, updated_at = now() WHERE id = :id"), {"id": campaign_id, **changes}
    )


_RESERVE = text("UPDATE campaigns SET reserved = reserved + :count WHERE id = :id RETURNING reserved - :count")


async def reserve(session: AsyncSession, campaign_id: uuid.UUID, count: int) -> int:
    """Reserve `count` sequence numbers of the campaign's codes; answers the first."""
    start = (await session.execute(_RESERVE, {"id": campaign_id, "count": count})).scalar_one()
    return int(start) + 1


_ADD_GENERATED = text("UPDATE campaigns SET generated = generated + :n WHERE id = :id")


async def add_generated(session: AsyncSession, campaign_id: uuid.UUID, count: int) -> None:
    await session.execute(_ADD_GENERATED, {"id": campaign_id, "n": count})


# While a generation job runs its batches commit out of order: the cursor stays put until it has finished,
# so no unassigned code below it is skipped for good.
_ISSUED = text(
    """
    UPDATE campaigns
       SET issued = issued + 1, generated = generated + :made,
           issue_cursor = CASE
               WHEN EXISTS (SELECT 1 FROM code_jobs j WHERE j.campaign_id = :id AND j.status IN ('pending', 'running'))
               THEN issue_cursor ELSE greatest(issue_cursor, :seq) END
     WHERE id = :id
    """
)


async def count_issued(session: AsyncSession, campaign_id: uuid.UUID, seq: int, *, made: bool) -> None:
    """One more code issued (the one at `seq`; `made` when it was made for this issuance)."""
    await session.execute(_ISSUED, {"id": campaign_id, "seq": seq, "made": 1 if made else 0})


_NOW = text("SELECT now()")


async def database_now(session: AsyncSession) -> datetime:
    """The transaction's time, the clock validity windows are judged by."""
    now: datetime = (await session.execute(_NOW)).scalar_one()
    return now


_FORMATS = text("SELECT DISTINCT code_prefix, code_length, charset FROM campaigns")
_ANY_IMPORTED = text("SELECT EXISTS (SELECT 1 FROM campaigns WHERE imported > 0)")


async def code_formats(session: AsyncSession) -> tuple[frozenset[CodeFormat], bool]:
    """Every campaign's code format, and whether any campaign holds imported codes (of any spelling)."""
    formats = frozenset(CodeFormat(p, n, c) for p, n, c in await session.execute(_FORMATS))
    return formats, bool((await session.execute(_ANY_IMPORTED)).scalar())
