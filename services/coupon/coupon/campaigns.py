"""Coupon campaigns: their terms (discount, code format, limits, validity) and their figures."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.code_format import CodeFormat
from coupon.repositories import campaigns as campaign_rows
from coupon.repositories import jobs as job_rows
from coupon.repositories import redemptions as redemption_rows
from coupon.repositories.campaigns import CampaignRow, NewCampaign
from coupon.runtime import CouponRuntime
from coupon.schemas import (
    Campaign,
    CampaignCreate,
    CampaignPatch,
    CampaignStats,
    CodeFormatOut,
    CodeJob,
    DiscountOut,
    DiscountType,
    LimitsOut,
)
from kit.errors import FieldError, NotFound, ValidationFailed
from kit.pagination import Page, PageParams, paginate

log = structlog.get_logger("coupon.campaigns")


class HasDiscount(Protocol):
    @property
    def discount_type(self) -> DiscountType: ...
    @property
    def discount_value(self) -> Decimal: ...
    @property
    def currency(self) -> str | None: ...
    @property
    def max_discount(self) -> Decimal | None: ...


def discount(row: HasDiscount) -> DiscountOut:
    return DiscountOut(
        type=row.discount_type, value=row.discount_value, currency=row.currency, max_discount=row.max_discount
    )


def _campaign(row: CampaignRow, redeemed: int, rolled_back: int, job: CodeJob | None) -> Campaign:
    return Campaign(
        id=row.id,
        name=row.name,
        discount=discount(row),
        code=CodeFormatOut(prefix=row.code_prefix, length=row.code_length, charset=row.charset),
        limits=LimitsOut(per_code=row.per_code_limit, per_customer=row.per_customer_limit, total=row.total_limit),
        min_order_total=row.min_order_total,
        categories=list(row.categories),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        active=row.active,
        created_at=row.created_at,
        updated_at=row.updated_at,
        stats=CampaignStats(generated=row.generated, issued=row.issued, redeemed=redeemed, rolled_back=rolled_back),
        generation=job,
    )


async def _with_stats(session: AsyncSession, rows: list[CampaignRow]) -> list[Campaign]:
    ids = [row.id for row in rows]
    if not ids:
        return []
    counts = await redemption_rows.counts(session, ids)
    jobs = await job_rows.latest(session, ids)
    out = []
    for row in rows:
        c = counts.get(row.id)
        out.append(_campaign(row, c.redeemed if c else 0, c.rolled_back if c else 0, jobs.get(row.id)))
    return out


async def campaign_row(session: AsyncSession, campaign_id: uuid.UUID, *, lock: bool = False) -> CampaignRow:
    """The campaign's row, or 404; `lock` holds it until the transaction ends (its counters change)."""
    row = await campaign_rows.get(session, campaign_id, lock=lock)
    if row is None:
        raise NotFound("No coupon campaign with this id.", code="campaign_not_found")
    return row


async def create_campaign(session: AsyncSession, runtime: CouponRuntime, body: CampaignCreate) -> Campaign:
    fmt = CodeFormat(body.normalized_prefix, body.code.length, body.code.charset)
    discount, limits = body.discount, body.limits
    new = NewCampaign(
        id=uuid.uuid4(), name=body.name,
        discount_type=discount.type, discount_value=discount.value, currency=discount.currency,
        max_discount=discount.max_discount,
        code_prefix=fmt.prefix, code_length=fmt.length, charset=body.code.charset,
        per_code_limit=limits.per_code, per_customer_limit=limits.per_customer, total_limit=limits.total,
        min_order_total=body.min_order_total, categories=body.categories,
        valid_from=body.valid_from, valid_until=body.valid_until,
    )  # fmt: skip
    row = await campaign_rows.insert(session, new)
    runtime.formats.add(fmt)
    log.info("coupon.campaign.created", campaign_id=str(row.id))
    return _campaign(row, 0, 0, None)


async def get_campaign(session: AsyncSession, campaign_id: uuid.UUID) -> Campaign:
    return (await _with_stats(session, [await campaign_row(session, campaign_id)]))[0]


async def list_campaigns(session: AsyncSession, page: PageParams, active: bool | None) -> Page[Campaign]:
    rows = await campaign_rows.page(session, page.after(datetime, uuid.UUID), active, page.limit + 1)
    items, cursor = paginate(rows, page.limit, key=lambda r: [r.created_at.isoformat(), str(r.id)])
    return Page[Campaign](items=await _with_stats(session, items), next_cursor=cursor)


async def update_campaign(session: AsyncSession, campaign_id: uuid.UUID, body: CampaignPatch) -> Campaign:
    row = await campaign_row(session, campaign_id, lock=True)
    fields = body.model_dump(exclude_unset=True)
    for name in ("name", "active"):
        if name in fields and fields[name] is None:
            raise ValidationFailed([FieldError(name, "Cannot be null.")])
    until = fields.get("valid_until")
    if until is not None and row.valid_from is not None and until <= row.valid_from:
        raise ValidationFailed([FieldError("valid_until", "Must be after the campaign's valid_from.")])
    if fields:
        await campaign_rows.update(session, campaign_id, fields)
    return await get_campaign(session, campaign_id)
