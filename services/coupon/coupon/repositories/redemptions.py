"""Redemptions and the counters that carry their limits: per code (`codes.uses`), per customer (`customer_uses`),
total (`campaigns.uses`, kept only for campaigns with a total limit).

The hot paths, on asyncpg: a code is read (validation) or locked (redemption) with its campaign's terms, then
one statement takes every use at once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.repositories._rows import columns, typed
from coupon.schemas import DiscountType
from kit.db import request_driver_connection


@dataclass(frozen=True, slots=True)
class CodeTerms:
    """A code, its uses and its campaign's terms, as of `now` (the transaction's time)."""

    code: str
    campaign_id: uuid.UUID
    assigned_to: str | None
    code_uses: int
    customer_uses: int | None  # the customer's uses in the campaign (read by validation only)
    now: datetime
    active: bool
    valid_from: datetime | None
    valid_until: datetime | None
    currency: str | None
    min_order_total: Decimal | None
    categories: list[str]
    discount_type: DiscountType
    discount_value: Decimal
    max_discount: Decimal | None
    per_code_limit: int
    per_customer_limit: int
    total_limit: int | None
    uses: int


_TERMS = """
SELECT c.code, k.id AS campaign_id, c.customer_id AS assigned_to, c.uses AS code_uses, {customer_uses}, now() AS now,
       k.active, k.valid_from, k.valid_until, k.currency, k.min_order_total, k.categories, k.discount_type,
       k.discount_value, k.max_discount, k.per_code_limit, k.per_customer_limit, k.total_limit, k.uses
  FROM codes c JOIN campaigns k ON k.id = c.campaign_id
 WHERE c.code = $1
"""
_READ = _TERMS.format(
    customer_uses="(SELECT uses FROM customer_uses u WHERE u.campaign_id = k.id AND u.customer_id = $2) "
    "AS customer_uses"
)
# Locks the code row (the row that carries the per-code limit); the campaign is read, not locked.
_LOCK = _TERMS.format(customer_uses="NULL::integer AS customer_uses") + "   FOR UPDATE OF c\n"


async def read_terms(session: AsyncSession, code: str, customer_id: str) -> CodeTerms | None:
    connection = await request_driver_connection(session)
    row = await connection.fetchrow(_READ, code, customer_id)
    return None if row is None else typed(CodeTerms, row)


async def lock_terms(session: AsyncSession, code: str) -> CodeTerms | None:
    connection = await request_driver_connection(session)
    row = await connection.fetchrow(_LOCK, code)
    return None if row is None else typed(CodeTerms, row)


@dataclass(frozen=True, slots=True)
class RedemptionRow:
    id: uuid.UUID
    code: str
    campaign_id: uuid.UUID
    customer_id: str
    order_id: str
    currency: str
    discount_amount: Decimal
    created_at: datetime
    rolled_back_at: datetime | None


REDEMPTION_COLUMNS = columns(RedemptionRow)


@dataclass(frozen=True, slots=True)
class RedeemOutcome:
    """What the redemption statement did: `redemption` is the prior one (`is_new` false) or the new one (true);
    None when no use was taken, `customer_taken` then saying whether the customer's limit was what stopped it."""

    is_new: bool | None
    redemption: RedemptionRow | None
    customer_taken: bool


# Everything after the code row is locked, in one statement (a new snapshot, so a concurrent redemption
# with this order id that committed while we waited for the lock is seen):
# - a prior redemption of this code for this order id answers the repeat and takes nothing;
# - the customer's use is a conditional upsert on customer_uses (the row that carries that limit);
# - the campaign's use, only for campaigns with a total limit, a conditional UPDATE of the campaign row;
# - then the code's use and the redemption.
# Each step runs only if the one before it succeeded (the EXISTS references also fix the order in which the
# rows are locked: code, customer, campaign). $6 is false when the caller already found a refusal.
_REDEEM = f"""
WITH prior AS (
    SELECT false AS is_new, {REDEMPTION_COLUMNS} FROM redemptions WHERE code = $1 AND order_id = $2
), customer AS (
    INSERT INTO customer_uses AS u (campaign_id, customer_id, uses)
    SELECT $3, $4, 1 WHERE $6 AND NOT EXISTS (SELECT 1 FROM prior)
    ON CONFLICT (campaign_id, customer_id) DO UPDATE SET uses = u.uses + 1 WHERE u.uses < $5
    RETURNING uses
), campaign AS (
    UPDATE campaigns SET uses = uses + 1
     WHERE id = $3 AND $7 AND uses < total_limit AND EXISTS (SELECT 1 FROM customer)
    RETURNING uses
), code AS (
    UPDATE codes SET uses = uses + 1
     WHERE code = $1 AND EXISTS (SELECT 1 FROM customer) AND (NOT $7 OR EXISTS (SELECT 1 FROM campaign))
    RETURNING uses
), created AS (
    INSERT INTO redemptions (id, code, campaign_id, customer_id, order_id, order_total, currency, discount_amount)
    SELECT $8, $1, $3, $4, $2, $9, $10, $11 WHERE EXISTS (SELECT 1 FROM code)
    RETURNING true AS is_new, {REDEMPTION_COLUMNS}
)
SELECT r.*, EXISTS (SELECT 1 FROM customer) AS customer_taken
  FROM (SELECT 1) AS one
  LEFT JOIN (SELECT * FROM prior UNION ALL SELECT * FROM created) AS r ON true
"""


async def redeem(
    session: AsyncSession,
    terms: CodeTerms,
    *,
    order_id: str,
    customer_id: str,
    order_total: Decimal,
    currency: str,
    discount_amount: Decimal,
    take: bool,
) -> RedeemOutcome:
    """Redeem the locked code for this order, or answer the order's earlier redemption. `take` false (a refusal
    found already) takes no use: only an earlier redemption can then come back."""
    connection = await request_driver_connection(session)
    row = await connection.fetchrow(
        _REDEEM,
        terms.code,
        order_id,
        terms.campaign_id,
        customer_id,
        terms.per_customer_limit,
        take,
        terms.total_limit is not None,
        uuid.uuid4(),
        order_total,
        currency,
        discount_amount,
    )
    assert row is not None  # the statement always answers one row
    redemption = None if row["id"] is None else typed(RedemptionRow, row)
    return RedeemOutcome(is_new=row["is_new"], redemption=redemption, customer_taken=row["customer_taken"])


_ROLL_BACK = text(
    f"UPDATE redemptions SET rolled_back_at = now() WHERE id = :id AND rolled_back_at IS NULL "
    f"RETURNING {REDEMPTION_COLUMNS}"
)
_GET = text(f"SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE id = :id")
# Given back one statement at a time, in the order a redemption takes them (code, customer, campaign),
# so a rollback and a redemption never wait on each other in a cycle.
_GIVE_BACK = (
    text("UPDATE codes SET uses = uses - 1 WHERE code = :code"),
    text("UPDATE customer_uses SET uses = uses - 1 WHERE campaign_id = :campaign_id AND customer_id = :customer_id"),
    text("UPDATE campaigns SET uses = uses - 1 WHERE id = :campaign_id AND total_limit IS NOT NULL"),
)


async def roll_back(session: AsyncSession, redemption_id: uuid.UUID) -> RedemptionRow | None:
    """Mark the redemption rolled back and give its uses back; None when there is no standing redemption of that
    id (unknown, or rolled back already)."""
    row = (await session.execute(_ROLL_BACK, {"id": redemption_id})).first()
    if row is None:
        return None
    redemption = typed(RedemptionRow, row)
    params = {"code": redemption.code, "campaign_id": redemption.campaign_id, "customer_id": redemption.customer_id}
    for statement in _GIVE_BACK:
        await session.execute(statement, params)
    return redemption


async def get(session: AsyncSession, redemption_id: uuid.UUID) -> RedemptionRow | None:
    row = (await session.execute(_GET, {"id": redemption_id})).first()
    return None if row is None else typed(RedemptionRow, row)


@dataclass(frozen=True, slots=True)
class RedemptionCounts:
    redeemed: int
    rolled_back: int


_COUNTS = text(
    """
    SELECT campaign_id,
           count(*) FILTER (WHERE rolled_back_at IS NULL) AS redeemed,
           count(*) FILTER (WHERE rolled_back_at IS NOT NULL) AS rolled_back
      FROM redemptions WHERE campaign_id = ANY(:ids) GROUP BY campaign_id
    """
)


async def counts(session: AsyncSession, campaign_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, RedemptionCounts]:
    """Standing and rolled-back redemptions per campaign (campaigns without any are left out)."""
    rows = await session.execute(_COUNTS, {"ids": list(campaign_ids)})
    return {row.campaign_id: typed(RedemptionCounts, row) for row in rows}
