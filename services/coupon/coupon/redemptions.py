"""Validation, redemption and rollback of codes.

Limits hold under any concurrency because each is checked by a write on the row that carries it, in one
order for every transaction (code, then customer, then campaign):

- per code: the code row is locked (`SELECT ... FOR UPDATE`) before its uses are read;
- per customer: a conditional upsert on `customer_uses (campaign, customer)`;
- total: a conditional `UPDATE campaigns SET uses = uses + 1 WHERE uses < total_limit`, taken only by
  campaigns that have a total limit, so the others do not serialise on their campaign row.

A limit that is reached is a 409; nothing is written. Every lookup of a code passes the guards first (the
caller's guess ceiling, the check character: coupon.guards).
"""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.code_format import normalize
from coupon.repositories import redemptions as redemption_rows
from coupon.repositories.redemptions import CodeTerms, RedemptionRow
from coupon.runtime import CouponRuntime
from coupon.schemas import Redemption, RedemptionRequest, ValidationRequest, ValidationResult
from kit import experiments
from kit.auth import Caller
from kit.errors import Conflict, NotFound, Unprocessable
from kit.types import CURRENCY_DECIMALS
from kit.webhooks import CouponRedeemed, CouponRedemptionView, publish_webhook

log = structlog.get_logger("coupon.redemptions")


def _guesser(caller: Caller) -> str | None:
    """Whose budget a failed guess spends: a customer token's minter (so minting a token per guess gains nothing),
    else the caller. Service-to-service calls (kind "internal") are trusted and not throttled."""
    if caller.kind == "internal":
        return None
    if caller.kind == "customer":
        return caller.issuer or "customer:unknown-issuer"
    return f"{caller.kind}:{caller.id}"


async def _checked_code(
    session: AsyncSession, runtime: CouponRuntime, caller: Caller, raw_code: str, customer_id: str
) -> str:
    """The normalised code, once the caller is within its guess ceiling and the check character is right
    (before any lookup)."""
    guesser = _guesser(caller)
    if guesser is not None:
        await runtime.throttle.check_caller(guesser)
    code = normalize(raw_code)
    if not await runtime.formats.accepts(session, code):
        if guesser is not None:
            await runtime.throttle.failed(guesser, customer_id)
        raise NotFound(
            "No such coupon code: it does not match any campaign's format or its check character is wrong "
            "(a typing mistake?).",
            code="coupon_not_found",
            reason="check_character_mismatch",
        )
    return code


async def _unknown(runtime: CouponRuntime, caller: Caller, customer_id: str) -> NotFound:
    guesser = _guesser(caller)
    if guesser is not None:
        await runtime.throttle.failed(guesser, customer_id)
    return NotFound("No such coupon code.", code="coupon_not_found", reason="unknown_code")


def _discount_amount(terms: CodeTerms, order_total: Decimal, currency: str) -> Decimal:
    """Percent discounts are rounded half up to the currency's minor unit, then capped by `max_discount`;
    no discount exceeds the order total."""
    quantum = Decimal(1).scaleb(-CURRENCY_DECIMALS.get(currency, 2))
    if terms.discount_type == "percent":
        amount = (order_total * terms.discount_value / 100).quantize(quantum, rounding=ROUND_HALF_UP)
        if terms.max_discount is not None:
            amount = min(amount, terms.max_discount)
    else:
        amount = terms.discount_value
    return min(amount, order_total).quantize(quantum, rounding=ROUND_HALF_UP)


def _refusal(terms: CodeTerms, body: ValidationRequest | RedemptionRequest) -> tuple[str, str] | None:
    """Why this code cannot apply to this order (reason, detail), limits aside."""
    if not terms.active:
        return "inactive", "This coupon's campaign is inactive."
    if terms.valid_from is not None and terms.now < terms.valid_from:
        return "not_yet_valid", "This coupon is not valid yet."
    if terms.valid_until is not None and terms.now >= terms.valid_until:
        return "expired", "This coupon has expired."
    if terms.assigned_to is not None and terms.assigned_to != body.customer_id:
        return "assigned_to_another_customer", "This coupon was issued to another customer."
    if terms.currency is not None and terms.currency != body.currency:
        return "currency_mismatch", f"This coupon applies to orders in {terms.currency}."
    if terms.min_order_total is not None and body.order_total < terms.min_order_total:
        return "minimum_not_met", f"This coupon needs an order total of at least {terms.min_order_total}."
    if body.categories is not None and terms.categories and not set(body.categories) & set(terms.categories):
        return "category_mismatch", "This coupon applies to other categories."
    return None


async def validate(
    session: AsyncSession, runtime: CouponRuntime, caller: Caller, raw_code: str, body: ValidationRequest
) -> ValidationResult:
    code = await _checked_code(session, runtime, caller, raw_code, body.customer_id)
    terms = await redemption_rows.read_terms(session, code, body.customer_id)
    if terms is None:
        raise await _unknown(runtime, caller, body.customer_id)
    refusal = _refusal(terms, body)
    reason = refusal[0] if refusal else None
    if reason is None:
        total_reached = terms.total_limit is not None and terms.uses >= terms.total_limit
        if terms.code_uses >= terms.per_code_limit or total_reached:
            reason = "coupon_exhausted"
        elif (terms.customer_uses or 0) >= terms.per_customer_limit:
            reason = "customer_limit_reached"
    if reason is not None:
        return ValidationResult(valid=False, discount_amount=None, reason=reason)
    amount = _discount_amount(terms, body.order_total, body.currency)
    return ValidationResult(valid=True, discount_amount=amount, reason=None)


def _redemption(row: RedemptionRow) -> Redemption:
    return Redemption(
        redemption_id=row.id,
        discount_amount=row.discount_amount,
        currency=row.currency,
        code=row.code,
        campaign_id=row.campaign_id,
        customer_id=row.customer_id,
        order_id=row.order_id,
        status="rolled_back" if row.rolled_back_at is not None else "redeemed",
        created_at=row.created_at,
        rolled_back_at=row.rolled_back_at,
    )


async def redeem(
    session: AsyncSession, runtime: CouponRuntime, caller: Caller, raw_code: str, body: RedemptionRequest
) -> Redemption:
    """Idempotent by `order_id` per code: a repeat answers with the first redemption (even if it was since
    rolled back) and changes nothing. Two statements: lock the code row, then everything else at once."""
    code = await _checked_code(session, runtime, caller, raw_code, body.customer_id)
    terms = await redemption_rows.lock_terms(session, code)
    if terms is None:
        raise await _unknown(runtime, caller, body.customer_id)
    refusal = _refusal(terms, body)
    exhausted = terms.code_uses >= terms.per_code_limit
    amount = _discount_amount(terms, body.order_total, body.currency)
    outcome = await redemption_rows.redeem(
        session,
        terms,
        order_id=body.order_id,
        customer_id=body.customer_id,
        order_total=body.order_total,
        currency=body.currency,
        discount_amount=amount,
        take=refusal is None and not exhausted,
    )
    if outcome.is_new is False:
        assert outcome.redemption is not None
        if outcome.redemption.customer_id != body.customer_id:
            raise Conflict(
                "This order id was already used with this coupon by another customer.", code="order_id_conflict"
            )
        return _redemption(outcome.redemption)
    if refusal is not None:
        raise Unprocessable(refusal[1], code="coupon_not_applicable", reason=refusal[0])
    if exhausted:
        raise Conflict("This coupon code has been used up.", code="coupon_exhausted", limit="per_code")
    if not outcome.customer_taken:
        raise Conflict(
            "This customer has used this campaign's coupons as often as allowed.",
            code="customer_limit_reached",
            limit=terms.per_customer_limit,
        )
    if outcome.redemption is None:
        # the customer's use was taken but the campaign's total was reached; raising rolls the former back
        raise Conflict("This campaign's coupons have all been used.", code="coupon_exhausted", limit="total")
    redemption = _redemption(outcome.redemption)
    # a code given under an experiment: its discount is what that reward cost
    await experiments.record_follow_up(
        session, code, f"redemption:{redemption.redemption_id}", money=amount, currency=body.currency
    )
    view = CouponRedemptionView.model_validate(redemption.model_dump())
    await publish_webhook(session, CouponRedeemed(customer_id=redemption.customer_id, redemption=view))
    return redemption


async def roll_back(session: AsyncSession, redemption_id: uuid.UUID) -> Redemption:
    """Give the use back (order cancelled). A repeat answers with the rolled-back redemption."""
    row = await redemption_rows.roll_back(session, redemption_id)
    if row is None:
        existing = await redemption_rows.get(session, redemption_id)
        if existing is None:
            raise NotFound("No coupon redemption with this id.", code="redemption_not_found")
        return _redemption(existing)
    log.info("coupon.redemption.rolled_back", redemption_id=str(redemption_id))
    redemption = _redemption(row)
    await experiments.record_follow_up(
        session, row.code, f"rollback:{redemption_id}", money=-redemption.discount_amount, currency=redemption.currency
    )
    return redemption
