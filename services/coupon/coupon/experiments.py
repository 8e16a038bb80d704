"""Experiments on surprise rules: lever type `coupon_rule` (a rule that issues a coupon) and `reward` (a gift
rule: one that grants a catalogue item), the id being the rule's id either way.

A rule that fires for a customer in the holdout does everything but give: the issuance runs in a savepoint that
is rolled back, so the holdout is exposed exactly when a code would have been issued, at the same business time
and for the same trigger. A code given under an experiment reports its discount as the reward's cost when it is
redeemed (and gives it back when the redemption is rolled back). A gift rule in the holdout publishes no
`reward.gift_granted` but is recorded, withheld, with the same trigger and business time as a gift; a gift given
under an experiment carries the experiment's id to the points service, which reports the catalogue item's price in
points as the gift's cost once it is granted (nothing when the grant fails: out of stock, inactive).
"""

from __future__ import annotations

import uuid
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.issuance import issue_coupon
from coupon.repositories import rules as rule_rows
from coupon.runtime import CouponRuntime
from coupon.schemas import Issuance, IssuanceRequest
from kit import events, experiments
from kit.contracts import GiftGranted

log = structlog.get_logger("coupon.experiments")

LEVER = "coupon_rule"
GIFT_LEVER = "reward"


def _rule_id(lever_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(lever_id)
    except ValueError:
        return None


async def rule_exists(session: AsyncSession, lever_id: str) -> bool:
    """A `coupon_rule` lever: a surprise rule that issues a coupon."""
    rule_id = _rule_id(lever_id)
    return rule_id is not None and await rule_rows.exists(session, rule_id, "coupon")


async def gift_rule_exists(session: AsyncSession, lever_id: str) -> bool:
    """A `reward` lever: a gift rule (one that grants a catalogue item)."""
    rule_id = _rule_id(lever_id)
    return rule_id is not None and await rule_rows.exists(session, rule_id, "gift")


async def issue_or_withhold(
    session: AsyncSession,
    runtime: CouponRuntime,
    rule_id: uuid.UUID,
    campaign_id: uuid.UUID,
    event_key: str,
    customer_id: str,
    occurred_at: datetime,
) -> Issuance | None:
    """Issue the rule's code (None when the customer is in a running experiment's holdout); raises the issuance's
    refusal either way, so a campaign that cannot issue exposes nobody."""
    experiment = await experiments.running_experiment(session, LEVER, str(rule_id), occurred_at)
    holdout = experiment is not None and experiment.arm(customer_id) == "holdout"
    nested = await session.begin_nested()
    try:
        issued = await issue_coupon(session, runtime, campaign_id, IssuanceRequest(customer_id=customer_id))
    except BaseException:
        await nested.rollback()
        raise
    if holdout:
        await nested.rollback()
    else:
        await nested.commit()
    if experiment is not None:
        await experiments.record(
            session,
            experiment,
            customer_id,
            key=event_key,
            occurred_at=occurred_at,
            withheld=holdout,
            reference=None if holdout else issued.code,
        )
    if holdout:
        log.info("coupon.rule.withheld", rule_id=str(rule_id), event_key=event_key)
        return None
    return issued


GIFT_NAMESPACE = uuid.UUID("8f0e7d1c-5b2a-4c3e-9a6f-1d2e3f4a5b6c")


async def grant_gift(
    session: AsyncSession,
    rule_id: uuid.UUID,
    reward_id: uuid.UUID,
    event_key: str,
    customer_id: str,
    occurred_at: datetime,
) -> None:
    """A gift rule fired: tell the points service to grant the catalogue item (`reward.gift_granted`, through the
    outbox, committed with the firing). The event id is derived from the rule and the trigger, so the grant is
    one grant whatever happens to the delivery. A customer in a running experiment's holdout gets nothing, and
    is recorded exactly as a given gift would be (same trigger key, same business time)."""
    experiment = await experiments.running_experiment(session, GIFT_LEVER, str(rule_id), occurred_at)
    holdout = experiment is not None and experiment.arm(customer_id) == "holdout"
    grant_id = uuid.uuid5(GIFT_NAMESPACE, f"{rule_id}:{event_key}")
    if not holdout:
        gift = GiftGranted(
            grant_id=grant_id,
            rule_id=rule_id,
            reward_id=reward_id,
            customer_id=customer_id,
            # the points service reports the gift's cost to this experiment
            experiment_id=None if experiment is None else experiment.id,
        )
        await events.publish(session, gift, occurred_at=occurred_at, event_id=grant_id)
    if experiment is not None:
        await experiments.record(
            session, experiment, customer_id, key=event_key, occurred_at=occurred_at, withheld=holdout,
            reference=None if holdout else f"gift:{grant_id}",
        )  # fmt: skip
    log.info("coupon.rule.gift", rule_id=str(rule_id), event_key=event_key, withheld=holdout)
