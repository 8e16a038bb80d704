"""Surprise rules applied to the platform's events.

`purchase.created`: the service counts each customer's purchases itself (once per `purchase_id`, whatever
the event ids; a batch's purchases in a few statements, in their order), then every active `nth_purchase`
rule whose n is that count and every `order_total_at_least` rule the order meets issues a code to the
customer. `survey.detractor`: every active `survey_detractor`
rule does. Each rule fires at most once per event (`rule_firings` is keyed by rule and purchase or
response id); a rule whose campaign cannot issue (inactive, expired, out of codes) is skipped, not retried.
A gift rule (`reward_id`) publishes `reward.gift_granted` to the points service instead, in the same
transaction as its firing, so the gift is granted once (docs/rewards.md says why the rules live here).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from coupon import repository as repo
from coupon.experiments import grant_gift, issue_or_withhold
from coupon.service import CouponRuntime
from kit.db import request_driver_connection
from kit.errors import DomainError
from kit.events import Batched, Event, EventHandler
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


_SEEN = """
    INSERT INTO purchases_seen (purchase_id, customer_id, ordinal)
    SELECT p, c, 0 FROM unnest($1::varchar[], $2::varchar[]) AS t (p, c)
    ON CONFLICT DO NOTHING
    RETURNING purchase_id
"""
# the counter rows serialise one customer's concurrent purchases: each gets its own ordinal (sorted: concurrent
# runs lock them in one order)
_COUNT = """
    INSERT INTO customer_purchase_counts AS n (customer_id, purchases)
    SELECT * FROM unnest($1::varchar[], $2::int[])
    ON CONFLICT (customer_id) DO UPDATE SET purchases = n.purchases + excluded.purchases
    RETURNING customer_id, purchases
"""
_ORDINALS = """
    UPDATE purchases_seen AS s SET ordinal = u.o FROM unnest($1::varchar[], $2::int[]) AS u (p, o)
     WHERE s.purchase_id = u.p
"""


@dataclass(slots=True)
class _Purchase:
    event: Event
    purchase_id: str
    customer_id: str
    total: Decimal | None
    currency: Any
    ordinal: int = 0


def _purchase(event: Event) -> _Purchase | None:
    purchase_id = _text(event.payload, "purchase_id")
    customer_id = _text(event.payload, "customer_id")
    try:
        total: Decimal | None = Decimal(str(event.payload.get("total")))
    except InvalidOperation:
        total = None
    if total is not None and not total.is_finite():
        total = None
    if purchase_id is None or customer_id is None:
        log.warning("coupon.purchase.ignored", event_id=str(event.id), reason="missing ids")
        return None
    return _Purchase(event, purchase_id, customer_id, total, event.payload.get("currency"))


def handlers(runtime: CouponRuntime) -> dict[str, EventHandler]:
    async def purchases_created(session: AsyncSession, events: Sequence[Event]) -> None:
        """A run of purchases in a few statements: each counted once (by purchase_id) with its ordinal in its
        customer's order, then the rules of the recent ones fired in order, as one by one would."""
        first: dict[str, _Purchase] = {}
        for event in events:
            purchase = _purchase(event)
            if purchase is not None:
                first.setdefault(purchase.purchase_id, purchase)
        if not first:
            return
        connection = await request_driver_connection(session)
        candidates = list(first.values())
        seen = {
            row[0]
            for row in await connection.fetch(
                _SEEN, [p.purchase_id for p in candidates], [p.customer_id for p in candidates]
            )
        }
        fresh = [p for p in candidates if p.purchase_id in seen]
        if not fresh:
            return
        counts = Counter(p.customer_id for p in fresh)
        customers = sorted(counts)
        totals = dict(await connection.fetch(_COUNT, customers, [counts[c] for c in customers]))
        # the customer's k-th new purchase of this run follows the purchases counted before it
        given = {customer: int(totals[customer]) - counts[customer] for customer in customers}
        for purchase in fresh:
            given[purchase.customer_id] += 1
            purchase.ordinal = given[purchase.customer_id]
        await connection.execute(_ORDINALS, [p.purchase_id for p in fresh], [p.ordinal for p in fresh])
        recent = []
        for purchase in fresh:
            if purchase_wakes_customer(purchase.event, runtime.settings.recent_purchase_hours):
                recent.append(purchase)
            else:
                # counted toward nth_purchase above, but an old (imported) purchase surprises no one
                log.debug("coupon.purchase.not_recent", purchase_id=purchase.purchase_id)
        if not recent:
            return
        rules = await repo.fetch_all(
            session,
            "SELECT id, campaign_id, reward_id, trigger_type, n, amount, currency FROM coupon_rules "
            "WHERE active AND trigger_type IN ('nth_purchase', 'order_total_at_least') ORDER BY created_at, id",
        )
        for purchase in recent:
            for rule in rules:
                if rule.trigger_type == "nth_purchase":
                    matches = rule.n == purchase.ordinal
                else:
                    matches = (
                        purchase.total is not None
                        and purchase.currency == rule.currency
                        and purchase.total >= rule.amount
                    )
                if matches:
                    occurred_at = _time(purchase.event.payload, "occurred_at", purchase.event.occurred_at)
                    await _fire(
                        session,
                        runtime,
                        rule,
                        f"purchase:{purchase.purchase_id}",
                        purchase.customer_id,
                        occurred_at,
                    )

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

    return {"purchase.created": Batched(purchases_created), "survey.detractor": survey_detractor}
