"""Issuance: a campaign's code assigned to a customer (the next unassigned one, or one made for it), the
customer's wallet of issued codes, and coupon rewards issued once per key for the points service."""

from __future__ import annotations

import uuid
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.campaigns import campaign_row, discount
from coupon.codes import reserve_codes
from coupon.repositories import campaigns as campaign_rows
from coupon.repositories import codes as code_rows
from coupon.repositories import issuances as issuance_rows
from coupon.runtime import CouponRuntime
from coupon.schemas import Issuance, IssuanceRequest, RewardIssuance, RewardIssuanceRequest, WalletCoupon
from kit.errors import DomainError, Unprocessable
from kit.pagination import Page, PageParams, paginate
from kit.webhooks import CouponIssued, CouponView, publish_webhook

log = structlog.get_logger("coupon.issuance")


async def issue_coupon(
    session: AsyncSession, runtime: CouponRuntime, campaign_id: uuid.UUID, body: IssuanceRequest
) -> Issuance:
    """Assign the next unassigned, unused code of the campaign to the customer, or make one.

    The campaign row is locked: issuances of one campaign take turns, which keeps `issue_cursor` (where
    the next unassigned code is looked for) exact without scanning the codes already handed out."""
    campaign = await campaign_row(session, campaign_id, lock=True)
    now = await campaign_rows.database_now(session)
    if not campaign.active:
        raise Unprocessable("This campaign is inactive.", code="coupon_not_applicable", reason="inactive")
    if campaign.valid_until is not None and now >= campaign.valid_until:
        raise Unprocessable("This campaign has expired.", code="coupon_not_applicable", reason="expired")
    taken = await code_rows.next_unassigned(session, campaign_id, campaign.issue_cursor, campaign.reserved)
    if taken is not None:
        code, seq = taken.code, taken.seq
    else:
        seq = await reserve_codes(session, runtime, campaign, 1)
        code = await code_rows.insert_one(session, campaign_id, campaign.format, seq)
    await code_rows.assign(session, code, body.customer_id)
    await campaign_rows.count_issued(session, campaign_id, seq, made=taken is None)
    log.info("coupon.issued", campaign_id=str(campaign_id), customer_id=body.customer_id)
    issuance = Issuance(
        code=code,
        campaign_id=campaign_id,
        customer_id=body.customer_id,
        discount=discount(campaign),
        valid_from=campaign.valid_from,
        valid_until=campaign.valid_until,
    )
    coupon = CouponView.model_validate(issuance.model_dump())
    await publish_webhook(session, CouponIssued(customer_id=body.customer_id, coupon=coupon))
    return issuance


async def wallet(session: AsyncSession, customer_id: str, status: str | None, page: PageParams) -> Page[WalletCoupon]:
    rows = await code_rows.wallet_page(session, customer_id, status, page.after(datetime, str), page.limit + 1)
    items, cursor = paginate(rows, page.limit, key=lambda r: [r.issued_at.isoformat(), r.code])
    return Page[WalletCoupon](
        items=[
            WalletCoupon(
                code=r.spelling,
                campaign_id=r.campaign_id,
                campaign_name=r.campaign_name,
                discount=discount(r),
                status=r.status,
                uses=r.uses,
                uses_left=max(0, r.per_code_limit - r.uses),
                valid_from=r.valid_from,
                valid_until=r.valid_until,
                issued_at=r.issued_at,
            )
            for r in items
        ],
        next_cursor=cursor,
    )


async def _answer(session: AsyncSession, key: uuid.UUID) -> RewardIssuance:
    """What the key's row says (it exists: the caller's insert met it)."""
    row = await issuance_rows.get(session, key)
    assert row is not None
    return RewardIssuance(status=row.status, code=row.code, reason=row.reason)


async def issue_for_reward(
    session: AsyncSession, runtime: CouponRuntime, body: RewardIssuanceRequest
) -> RewardIssuance:
    """Issue a code for a points redemption, once per key: a repeat (or a key voided first) answers what the
    key's row says. The row is inserted before the code is assigned: a concurrent call with the same key waits
    on it and then reads the outcome."""
    if not await issuance_rows.claim(session, body.key, "issued", body.campaign_id, body.customer_id):
        return await _answer(session, body.key)
    try:
        async with session.begin_nested():
            issued = await issue_coupon(
                session, runtime, body.campaign_id, IssuanceRequest(customer_id=body.customer_id)
            )
    except DomainError as exc:
        # the campaign cannot issue (unknown, inactive, expired): final, the points service gives the points back
        reason = str(exc.extra.get("reason") or exc.instance_code)[:64]
        await issuance_rows.refuse(session, body.key, reason)
        log.info("coupon.reward_issuance.refused", key=str(body.key), reason=reason)
        return RewardIssuance(status="refused", code=None, reason=reason)
    await issuance_rows.set_code(session, body.key, issued.code)
    log.info("coupon.reward_issuance.issued", key=str(body.key), campaign_id=str(body.campaign_id))
    return RewardIssuance(status="issued", code=issued.code, reason=None)


async def void_reward_issuance(session: AsyncSession, key: uuid.UUID) -> RewardIssuance:
    """No code will ever be issued for this key, unless one was already: then that code is the answer."""
    if await issuance_rows.claim(session, key, "voided"):
        log.info("coupon.reward_issuance.voided", key=str(key))
        return RewardIssuance(status="voided", code=None, reason=None)
    return await _answer(session, key)
