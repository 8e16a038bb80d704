"""Surprise rules: what they are (CRUD) and how they fire.

`nth_purchase` and `order_total_at_least` fire on purchases: the service counts each customer's purchases itself
(once per `purchase_id`, whatever the event ids; a batch's purchases in a few statements, in their order), then
every active `nth_purchase` rule whose n is that count and every `order_total_at_least` rule the order meets
issues a code to the customer. `survey_detractor` rules fire on a detractor's answer. Each rule fires at most once
per event (`rule_firings` is keyed by rule and purchase or response id); a rule whose campaign cannot issue
(inactive, expired, out of codes) is skipped, not retried. A gift rule (`reward_id`) publishes
`reward.gift_granted` to the points service instead, in the same transaction as its firing, so the gift is granted
once (docs/rewards.md says why the rules live here).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.campaigns import campaign_row
from coupon.experiments import grant_gift, issue_or_withhold
from coupon.repositories import rules as rule_rows
from coupon.repositories.rules import RuleRow
from coupon.runtime import CouponRuntime
from coupon.schemas import Rule, RuleCreate, RulePatch
from kit import experiments
from kit.errors import DomainError, NotFound
from kit.pagination import Page, PageParams, paginate
from kit.purchases import is_recent

log = structlog.get_logger("coupon.rules")

PURCHASE_TRIGGERS = ("nth_purchase", "order_total_at_least")


def _rule(row: RuleRow) -> Rule:
    trigger: dict[str, Any] = {"type": row.trigger_type}
    if row.trigger_type == "nth_purchase":
        trigger["n"] = row.n
    elif row.trigger_type == "order_total_at_least":
        trigger.update(amount=row.amount, currency=row.currency)
    return Rule.model_validate(
        {
            "id": row.id,
            "campaign_id": row.campaign_id,
            "reward_id": row.reward_id,
            "trigger": trigger,
            "active": row.active,
            "created_at": row.created_at,
        }
    )


def _not_found() -> NotFound:
    return NotFound("No coupon rule with this id.", code="rule_not_found")


async def create_rule(session: AsyncSession, body: RuleCreate) -> Rule:
    # A gift's reward lives in the points service (no service reads another's schema): an unknown or inactive
    # reward is found out when the rule fires, and the points service then grants nothing (logged).
    if body.campaign_id is not None:
        await campaign_row(session, body.campaign_id)
    trigger = body.trigger.model_dump()
    row = await rule_rows.insert(
        session,
        campaign_id=body.campaign_id,
        reward_id=body.reward_id,
        trigger_type=trigger["type"],
        n=trigger.get("n"),
        amount=trigger.get("amount"),
        currency=trigger.get("currency"),
    )
    return _rule(row)


async def get_rule(session: AsyncSession, rule_id: uuid.UUID) -> Rule:
    row = await rule_rows.get(session, rule_id)
    if row is None:
        raise _not_found()
    return _rule(row)


async def list_rules(session: AsyncSession, page: PageParams) -> Page[Rule]:
    rows = await rule_rows.page(session, page.after(datetime, uuid.UUID), page.limit + 1)
    items, cursor = paginate(rows, page.limit, key=lambda r: [r.created_at.isoformat(), str(r.id)])
    return Page[Rule](items=[_rule(r) for r in items], next_cursor=cursor)


async def update_rule(session: AsyncSession, rule_id: uuid.UUID, body: RulePatch) -> Rule:
    if body.active is False:
        # a coupon rule is lever `coupon_rule`, a gift rule lever `reward`; ids are unique across both
        for lever in ("coupon_rule", "reward"):
            await experiments.ensure_lever_free(session, lever, str(rule_id))
    row = await rule_rows.set_active(session, rule_id, body.active)
    if row is None:
        raise _not_found()
    return _rule(row)


# ---------------------------------------------------------------- firing


async def _fire(
    session: AsyncSession,
    runtime: CouponRuntime,
    rule: RuleRow,
    event_key: str,
    customer_id: str,
    occurred_at: datetime,
) -> None:
    """Fire the rule for this event once: a gift, or a code issued (or withheld under an experiment)."""
    if not await rule_rows.record_firing(session, rule.id, event_key, customer_id):
        return
    if rule.reward_id is not None:
        await grant_gift(session, rule.id, rule.reward_id, event_key, customer_id, occurred_at)
        return
    assert rule.campaign_id is not None  # a rule grants a coupon or a gift (ck_coupon_rules_grants_one)
    try:
        issued = await issue_or_withhold(
            session, runtime, rule.id, rule.campaign_id, event_key, customer_id, occurred_at
        )
    except DomainError as exc:
        log.info("coupon.rule.skipped", rule_id=str(rule.id), event_key=event_key, reason=exc.detail)
        return
    if issued is None:  # withheld: the customer is in an experiment's holdout
        return
    await rule_rows.record_fired_code(session, rule.id, event_key, issued.code)
    log.info("coupon.rule.fired", rule_id=str(rule.id), event_key=event_key, customer_id=customer_id)


@dataclass(frozen=True, slots=True)
class PurchaseMade:
    """A purchase as the rules see it: `occurred_at` is its business time, `arrived_at` when the gateway accepted
    it (an old purchase, imported, counts toward `nth_purchase` but surprises no one)."""

    purchase_id: str
    customer_id: str
    total: Decimal | None
    currency: str | None
    occurred_at: datetime
    arrived_at: datetime


def _matches(rule: RuleRow, purchase: PurchaseMade, ordinal: int) -> bool:
    if rule.trigger_type == "nth_purchase":
        return rule.n == ordinal
    return (
        purchase.total is not None
        and rule.amount is not None
        and purchase.currency == rule.currency
        and purchase.total >= rule.amount
    )


async def _count(session: AsyncSession, purchases: Sequence[PurchaseMade]) -> list[tuple[PurchaseMade, int]]:
    """Count the purchases not seen before, each once (by purchase_id); answers them with their ordinal in their
    customer's purchases, in their order."""
    first: dict[str, PurchaseMade] = {}
    for purchase in purchases:
        first.setdefault(purchase.purchase_id, purchase)
    if not first:
        return []
    seen = await rule_rows.first_seen(session, [(p.purchase_id, p.customer_id) for p in first.values()])
    fresh = [p for p in first.values() if p.purchase_id in seen]
    if not fresh:
        return []
    counts = Counter(p.customer_id for p in fresh)
    totals = await rule_rows.count_purchases(session, dict(counts))
    # the customer's k-th new purchase of this run follows the purchases counted before it
    given = {customer: totals[customer] - counts[customer] for customer in counts}
    numbered = []
    for purchase in fresh:
        given[purchase.customer_id] += 1
        numbered.append((purchase, given[purchase.customer_id]))
    await rule_rows.set_ordinals(session, {p.purchase_id: ordinal for p, ordinal in numbered})
    return numbered


async def purchases_made(session: AsyncSession, runtime: CouponRuntime, purchases: Sequence[PurchaseMade]) -> None:
    """A run of purchases in a few statements: each counted once with its ordinal in its customer's order, then
    the rules of the recent ones fired in order, as one by one would."""
    recent = []
    for purchase, ordinal in await _count(session, purchases):
        if is_recent(purchase.occurred_at, purchase.arrived_at, runtime.recent_purchase_hours):
            recent.append((purchase, ordinal))
        else:
            # counted toward nth_purchase above, but an old (imported) purchase surprises no one
            log.debug("coupon.purchase.not_recent", purchase_id=purchase.purchase_id)
    if not recent:
        return
    rules = await rule_rows.active(session, PURCHASE_TRIGGERS)
    for purchase, ordinal in recent:
        for rule in rules:
            if _matches(rule, purchase, ordinal):
                key = f"purchase:{purchase.purchase_id}"
                await _fire(session, runtime, rule, key, purchase.customer_id, purchase.occurred_at)


async def detractor_answered(
    session: AsyncSession, runtime: CouponRuntime, response_id: str, customer_id: str, submitted_at: datetime
) -> None:
    """A detractor's answer: every active `survey_detractor` rule fires for it."""
    for rule in await rule_rows.active(session, ("survey_detractor",)):
        await _fire(session, runtime, rule, f"survey:{response_id[:100]}", customer_id, submitted_at)
