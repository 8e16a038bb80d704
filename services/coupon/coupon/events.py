"""Surprise rules applied to the platform's events.

`purchase.created`: the service counts each customer's purchases itself (once per `purchase_id`, whatever
the event ids), then every active `nth_purchase` rule whose n is that count and every `order_total_at_least`
rule the order meets issues a code to the customer. `survey.detractor`: every active `survey_detractor`
rule does. Each rule fires at most once per event (`rule_firings` is keyed by rule and purchase or
response id); a rule whose campaign cannot issue (inactive, expired, out of codes) is skipped, not retried.
A gift rule (`reward_id`) publishes `reward.gift_granted` to the points service instead, in the same
transaction as its firing, so the gift is granted once (docs/rewards.md says why the rules live here).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from coupon import repository as repo
from coupon.experiments import grant_gift, issue_or_withhold
from coupon.service import CouponRuntime
from kit.errors import DomainError
from kit.events import Event, EventHandler
from kit.purchases import purchase_wakes_customer

log = structlog.get_logger("coupon.events")


async def _fire(
    session: AsyncSession, runtime: CouponRuntime, rule: Any, event_key: str, customer_id: str, occurred_at: datetime
) -> None:
    first = await repo.fetch_one(
        session,
        "INSERT INTO rule_firings (rule_id, event_key, customer_id) VALUES (:rule, :key, :customer) "
        "ON CONFLICT DO NOTHING RETURNING rule_id",
        rule=rule.id,
        key=event_key,
        customer=customer_id,
    )
    if first is None:
        return
    if rule.reward_id is not None:
        await grant_gift(session, rule, event_key, customer_id, occurred_at)
        return
    try:
        issued = await issue_or_withhold(session, runtime, rule, event_key, customer_id, occurred_at)
    except DomainError as exc:
        log.info("coupon.rule.skipped", rule_id=str(rule.id), event_key=event_key, reason=exc.detail)
        return
    if issued is None:  # withheld: the customer is in an experiment's holdout
        return
    await repo.execute(
        session,
        "UPDATE rule_firings SET code = :code WHERE rule_id = :rule AND event_key = :key",
        code=issued.code,
        rule=rule.id,
        key=event_key,
    )
    log.info("coupon.rule.fired", rule_id=str(rule.id), event_key=event_key, customer_id=customer_id)


def _time(payload: Mapping[str, Any], name: str, default: datetime) -> datetime:
    """The business time of what fired a rule (a purchase's `occurred_at`), for experiments."""
    value = payload.get(name)
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else default
    except ValueError:
        moment = default
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


def handlers(runtime: CouponRuntime) -> dict[str, EventHandler]:
    async def purchase_created(session: AsyncSession, event: Event) -> None:
        purchase_id = _text(event.payload, "purchase_id")
        customer_id = _text(event.payload, "customer_id")
        currency = event.payload.get("currency")
        try:
            total: Decimal | None = Decimal(str(event.payload.get("total")))
        except InvalidOperation:
            total = None
        if total is not None and not total.is_finite():
            total = None
        if purchase_id is None or customer_id is None:
            log.warning("coupon.purchase.ignored", event_id=str(event.id), reason="missing ids")
            return
        first = await repo.fetch_one(
            session,
            "INSERT INTO purchases_seen (purchase_id, customer_id, ordinal) VALUES (:p, :c, 0) "
            "ON CONFLICT DO NOTHING RETURNING purchase_id",
            p=purchase_id,
            c=customer_id,
        )
        if first is None:
            return
        # the counter row serialises one customer's concurrent purchases: each gets its own ordinal
        counted = await repo.fetch_one(
            session,
            "INSERT INTO customer_purchase_counts AS n (customer_id, purchases) VALUES (:c, 1) "
            "ON CONFLICT (customer_id) DO UPDATE SET purchases = n.purchases + 1 RETURNING purchases",
            c=customer_id,
        )
        assert counted is not None
        ordinal = int(counted.purchases)
        await repo.execute(
            session, "UPDATE purchases_seen SET ordinal = :o WHERE purchase_id = :p", o=ordinal, p=purchase_id
        )
        if not purchase_wakes_customer(event, runtime.settings.recent_purchase_hours):
            # counted toward nth_purchase above, but an old (imported) purchase surprises no one
            log.info("coupon.purchase.not_recent", purchase_id=purchase_id, customer_id=customer_id)
            return
        rules = await repo.fetch_all(
            session,
            "SELECT id, campaign_id, reward_id, trigger_type, n, amount, currency FROM coupon_rules "
            "WHERE active AND trigger_type IN ('nth_purchase', 'order_total_at_least') ORDER BY created_at, id",
        )
        for rule in rules:
            if rule.trigger_type == "nth_purchase":
                matches = rule.n == ordinal
            else:
                matches = total is not None and currency == rule.currency and total >= rule.amount
            if matches:
                occurred_at = _time(event.payload, "occurred_at", event.occurred_at)
                await _fire(session, runtime, rule, f"purchase:{purchase_id}", customer_id, occurred_at)

    async def survey_detractor(session: AsyncSession, event: Event) -> None:
        response_id = _text(event.payload, "response_id") or str(event.payload.get("response_id") or "")
        customer_id = _text(event.payload, "customer_id")
        if not response_id or customer_id is None:
            log.warning("coupon.detractor.ignored", event_id=str(event.id), reason="missing ids")
            return
        rules = await repo.fetch_all(
            session,
            "SELECT id, campaign_id, reward_id FROM coupon_rules WHERE active AND trigger_type = 'survey_detractor' "
            "ORDER BY created_at, id",
        )
        for rule in rules:
            occurred_at = _time(event.payload, "submitted_at", event.occurred_at)
            await _fire(session, runtime, rule, f"survey:{response_id[:100]}", customer_id, occurred_at)

    return {"purchase.created": purchase_created, "survey.detractor": survey_detractor}
