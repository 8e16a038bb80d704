"""The points domain: earning by the rules, tiers, redemptions, reversals, expiry and the reports.

Policies (also in docs/points.md):
- Rounding: a purchase's points are computed exactly (decimals) and rounded down once, for the whole purchase;
  fixed campaign bonuses are added after rounding. A reversal's share is rounded down too (in the customer's
  favour), and the last refund of a purchase reverses whatever is left of what it earned.
- Negative balances: a reversal takes its points even if they were spent; the balance goes below zero and the
  next credits repay it before they form a lot. Redemptions never take a balance below zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from kit import experiments
from kit.contracts import PurchaseCreated, PurchaseItem, PurchaseRefunded
from kit.db import Database
from kit.errors import Conflict, FieldError, NotFound, ValidationFailed
from kit.imports import ImportReport, ParsedLines, RejectedLine
from kit.purchases import utc
from kit.types import CURRENCY_DECIMALS, MAX_POINTS
from kit.webhooks import TierChanged, publish_webhook
from points import repository, reward_repository
from points.repository import Movement
from points.schemas import (
    AdjustmentRequest,
    Audit,
    Balance,
    EarningRules,
    EarnRequest,
    Expiring,
    ExpiryRun,
    Liability,
    NextTier,
    OpeningBalance,
    PointsResult,
    RedemptionRequest,
    ReversalRequest,
    ReversalResult,
    Tier,
    Transaction,
)
from points.tables import MAX_BALANCE

log = structlog.get_logger("points")

DEFAULT_TIERS: list[Tier] = [
    Tier(name="bronze", threshold=0, earn_multiplier=Decimal(1)),
    Tier(name="silver", threshold=1000, earn_multiplier=Decimal("1.25")),
    Tier(name="gold", threshold=5000, earn_multiplier=Decimal("1.5")),
]
EXPIRY_BATCH = 500
AUDIT_MISMATCH_LIMIT = 100
EXPIRING_SHOWN = 10


def _in_range(movement: Movement) -> Movement:
    """A credit or debit the ledger refused because the balance would leave ±(2^53-1): nothing changed."""
    if movement.outcome == "out_of_range":
        raise Conflict(
            f"The balance would leave the range of ±{MAX_BALANCE}; nothing was changed.",
            code="balance_out_of_range",
            balance=movement.balance,
            requested=movement.points,
        )
    return movement


def _result(movement: Movement) -> PointsResult:
    _in_range(movement)
    assert movement.transaction_id is not None
    return PointsResult(transaction_id=movement.transaction_id, points=movement.points, balance=movement.balance)


def _expires_at(rules: EarningRules, earned_at: datetime | None = None) -> datetime | None:
    """When points earned at `earned_at` (now when None; a purchase's own time for its points) expire."""
    if rules.expires_after_days is None:
        return None
    return (earned_at or datetime.now(UTC)) + timedelta(days=rules.expires_after_days)


def _born_expired(expires_at: datetime | None, now: datetime) -> bool:
    """A purchase's points expire by its own time: an old purchase's (imported history) may be past their expiry
    when earned. They are expired at once, as the hourly job would, so no balance ever shows them (a redemption
    never spends them either way)."""
    return expires_at is not None and expires_at <= now


# --- rules and tiers ---


async def current_tier(session: AsyncSession, customer_id: str) -> str | None:
    tiers_value, qualifying = await repository.tier_context(session, customer_id)
    tier, _ = tier_for(_tiers(tiers_value), max(0, qualifying))
    return tier.name if tier else None


async def announce_tier_change(session: AsyncSession, customer_id: str, before: str | None) -> None:
    """After a movement of qualifying points: a `tier.changed` webhook if the customer's tier is not `before`.
    (A tier that lapses only because time passed is announced at the customer's next movement.)"""
    tiers_value, qualifying = await repository.tier_context(session, customer_id)
    tier, _ = tier_for(_tiers(tiers_value), max(0, qualifying))
    after = tier.name if tier else None
    if after != before:
        event = TierChanged(
            customer_id=customer_id, previous_tier=before, tier=after, qualifying_points=max(0, qualifying)
        )
        await publish_webhook(session, event)
        log.info("points.tier.changed", customer_id=customer_id, previous_tier=before, tier=after)


async def get_rules(session: AsyncSession) -> EarningRules:
    stored = await repository.get_setting(session, "rules")
    return EarningRules.model_validate(stored) if stored is not None else EarningRules()


async def put_rules(session: AsyncSession, rules: EarningRules) -> EarningRules:
    """A bonus campaign that an experiment runs on cannot be removed (or renamed) until it is stopped."""
    kept = {c.name for c in rules.bonus_campaigns}
    for campaign in (await get_rules(session)).bonus_campaigns:
        if campaign.name not in kept:
            await experiments.ensure_lever_free(session, BONUS_LEVER, campaign.name)
    await repository.put_setting(session, "rules", rules.model_dump(mode="json"))
    return rules


def _tiers(stored: Any) -> list[Tier]:
    tiers = DEFAULT_TIERS if stored is None else [Tier.model_validate(t) for t in stored]
    return sorted(tiers, key=lambda t: t.threshold)


async def get_tiers(session: AsyncSession) -> list[Tier]:
    return _tiers(await repository.get_setting(session, "tiers"))


async def put_tiers(session: AsyncSession, tiers: Sequence[Tier]) -> list[Tier]:
    errors = []
    names = [t.name for t in tiers]
    thresholds = [t.threshold for t in tiers]
    if len(set(names)) != len(names):
        errors.append(FieldError("body", "Tier names must be unique."))
    if len(set(thresholds)) != len(thresholds):
        errors.append(FieldError("body", "Tier thresholds must be unique."))
    if len(tiers) > 50:
        errors.append(FieldError("body", "At most 50 tiers."))
    if errors:
        raise ValidationFailed(errors)
    ordered = sorted(tiers, key=lambda t: t.threshold)
    await repository.put_setting(session, "tiers", [t.model_dump(mode="json") for t in ordered])
    return ordered


def tier_for(tiers: Sequence[Tier], qualifying: int) -> tuple[Tier | None, Tier | None]:
    """(the tier reached, the next one) for a number of qualifying points; tiers sorted by threshold."""
    current: Tier | None = None
    for tier in tiers:
        if qualifying >= tier.threshold:
            current = tier
        else:
            return current, tier
    return current, None


# --- earning ---


@dataclass(frozen=True)
class Earning:
    points: int
    base: Decimal
    bonus_points: int


def purchase_points(
    rules: EarningRules,
    tier_multiplier: Decimal,
    occurred_at: datetime,
    total: Decimal,
    items: Sequence[PurchaseItem],
) -> Earning:
    """Points for a purchase: each line (unit_price x quantity, scaled down to `total` when the lines add up
    to more, e.g. after a discount) x points_per_currency_unit x its category multiplier x every active
    multiplier campaign for its category; the sum x the tier multiplier, rounded down once; plus the fixed
    bonus of every active bonus campaign that matches at least one line (or has no categories)."""
    lines: list[tuple[str | None, Decimal]] = [(i["category"], i["unit_price"] * i["quantity"]) for i in items]
    lines = [(category, amount) for category, amount in lines if amount > 0]
    lines_total = sum((amount for _, amount in lines), Decimal(0))
    if not lines:
        lines, lines_total = [(None, total)], total
    scale = min(Decimal(1), total / lines_total) if lines_total > 0 else Decimal(0)
    active = [c for c in rules.bonus_campaigns if c.starts_at <= occurred_at < c.ends_at]
    base = Decimal(0)
    for category, amount in lines:
        factor = rules.points_per_currency_unit
        if category is not None:
            factor *= rules.category_multipliers.get(category, Decimal(1))
        for campaign in active:
            if campaign.multiplier is not None and campaign.applies(occurred_at, category):
                factor *= campaign.multiplier
        base += amount * scale * factor
    base *= tier_multiplier
    bonus = sum(
        c.bonus_points
        for c in active
        if c.bonus_points is not None and any(c.applies(occurred_at, category) for category, _ in lines)
    )
    earned = int(base.to_integral_value(rounding=ROUND_FLOOR)) if base > 0 else 0
    return Earning(points=earned + bonus, base=base, bonus_points=bonus)


BONUS_LEVER = "bonus_campaign"


async def bonus_campaign_exists(session: AsyncSession, name: str) -> bool:
    return any(c.name == name for c in (await get_rules(session)).bonus_campaigns)


@dataclass(frozen=True)
class _BonusDecision:
    experiment: experiments.Experiment
    points: int
    withheld: bool


async def _earning_under_experiments(
    session: AsyncSession,
    rules: EarningRules,
    tier_multiplier: Decimal,
    purchase: PurchaseCreated,
    occurred_at: datetime,
) -> tuple[Earning, list[_BonusDecision]]:
    """The purchase's points, without the bonus of each campaign whose running experiment holds the customer
    out. A campaign's reward is what it adds to this purchase (the points with it minus without it); it
    exposes the customer only when that is more than nothing, in either arm."""
    earning = purchase_points(rules, tier_multiplier, occurred_at, purchase.total, purchase.items)
    decisions: list[_BonusDecision] = []
    withheld: set[int] = set()
    for index, campaign in enumerate(rules.bonus_campaigns):
        if not campaign.starts_at <= occurred_at < campaign.ends_at:
            continue
        experiment = await experiments.running_experiment(session, BONUS_LEVER, campaign.name, occurred_at)
        if experiment is None:
            continue
        others = rules.model_copy(update={"bonus_campaigns": [c for c in rules.bonus_campaigns if c is not campaign]})
        without = purchase_points(others, tier_multiplier, occurred_at, purchase.total, purchase.items)
        added = earning.points - without.points
        if added <= 0:
            continue
        holdout = experiment.arm(purchase.customer_id) == "holdout"
        decisions.append(_BonusDecision(experiment, added, holdout))
        if holdout:
            withheld.add(index)
    if withheld:
        given = [c for i, c in enumerate(rules.bonus_campaigns) if i not in withheld]
        earning = purchase_points(
            rules.model_copy(update={"bonus_campaigns": given}),
            tier_multiplier,
            occurred_at,
            purchase.total,
            purchase.items,
        )
    return earning, decisions


async def earn(session: AsyncSession, customer_id: str, body: EarnRequest) -> PointsResult:
    rules = await get_rules(session)
    tier_before = await current_tier(session, customer_id)
    movement = await repository.credit(
        session, customer_id, "earn", body.points, body.reference, body.description or "", _expires_at(rules)
    )
    if movement.outcome == "created":
        await announce_tier_change(session, customer_id, tier_before)
    log.info("points.earned", customer_id=customer_id, points=movement.points, outcome=movement.outcome)
    return _result(movement)


async def earn_for_purchase(session: AsyncSession, purchase: PurchaseCreated, occurred_at: datetime) -> Movement | None:
    """The `purchase.created` handler's work: earn by the rules at the purchase's own time (the event's
    business time), remember what the purchase earned."""
    occurred_at = utc(occurred_at)
    # the tier of the purchase's own time, so the same history gives the same points whenever it arrives
    rules_value, tiers_value, qualifying = await repository.earning_context(session, purchase.customer_id, occurred_at)
    rules = EarningRules.model_validate(rules_value) if rules_value is not None else EarningRules()
    tier, _ = tier_for(_tiers(tiers_value), max(0, qualifying))
    earning, decisions = await _earning_under_experiments(
        session, rules, tier.earn_multiplier if tier else Decimal(1), purchase, occurred_at
    )
    if earning.points >= MAX_POINTS:
        log.warning("points.purchase.refused", purchase_id=purchase.purchase_id, reason="points_out_of_range")
        return None
    movement: Movement | None = None
    lot_id: int | None = None
    points = earning.points
    if points > 0:
        tier_before = await current_tier(session, purchase.customer_id)
        movement = _in_range(
            await repository.credit(
                session,
                purchase.customer_id,
                "earn",
                points,
                purchase.purchase_id,
                f"Purchase {purchase.purchase_id}",
                _expires_at(rules, occurred_at),
            )
        )
        lot_id, points = movement.lot_id, movement.points
        if movement.outcome == "created" and movement.transaction_id is not None:
            await repository.record_qualification(session, movement.transaction_id, occurred_at)
            await announce_tier_change(session, purchase.customer_id, tier_before)
            if _born_expired(_expires_at(rules, occurred_at), datetime.now(UTC)):
                await repository.expire_accounts(session, [purchase.customer_id])
    await repository.record_purchase_earnings(
        session,
        [
            repository.PurchaseEarning(
                purchase.customer_id,
                purchase.purchase_id,
                points,
                lot_id,
                purchase.total,
                purchase.currency,
                occurred_at,
            )
        ],
    )
    for decision in decisions:
        await experiments.record(
            session,
            decision.experiment,
            purchase.customer_id,
            key=f"purchase:{purchase.purchase_id}",
            occurred_at=occurred_at,
            withheld=decision.withheld,
            points=decision.points,
        )
    log.info("points.purchase.earned", purchase_id=purchase.purchase_id, points=points, tier=tier and tier.name)
    return movement


class _RunDiverged(Exception):
    """A run's ledger answered other than planned (a purchase credited before, a balance out of range): the
    caller undoes the run and applies its purchases one at a time."""


def _qualifying(entries: Sequence[tuple[datetime, int]], since: datetime, at: datetime) -> int:
    """What `repository.earning_context` sums: the points qualifying after `since` (365 days before `at`) up to
    `at`."""
    return sum(points for when, points in entries if since < when <= at)


async def earn_for_purchases(session: AsyncSession, run: Sequence[tuple[PurchaseCreated, datetime]]) -> None:
    """A run of `purchase.created` events (in their order) leaving exactly what `earn_for_purchase` one at a
    time leaves, in five statements: each purchase's tier is computed from the customer's qualifying points in
    the 365 days before its own time, the earlier purchases of the run included, as the ledger would have them.

    One purchase, bonus campaigns (experiments may hold their bonus back), or a tier that changes now (its
    webhook goes between two purchases' entries) go one at a time."""
    if len(run) <= 1:
        for purchase, at in run:
            await earn_for_purchase(session, purchase, at)
        return
    purchases = [purchase for purchase, _ in run]
    times = [utc(at) for _, at in run]
    context = await repository.run_context(session, times)
    now, now_since, window_starts = context.now, context.now_since, context.window_starts
    rules = EarningRules.model_validate(context.rules) if context.rules is not None else EarningRules()
    tiers = _tiers(context.tiers)
    if rules.bonus_campaigns:
        for purchase, at in run:
            await earn_for_purchase(session, purchase, at)
        return
    customers = sorted({p.customer_id for p in purchases})
    since = min([now_since, *window_starts])
    entries: dict[str, list[tuple[datetime, int]]] = {c: [] for c in customers}
    for entry in await repository.qualifying_entries(session, customers, since):
        entries[entry.customer_id].append((entry.at, entry.points))
    credits: list[repository.Credit] = []
    earned: list[tuple[PurchaseCreated, int, datetime]] = []
    for purchase, occurred_at, window_start in zip(purchases, times, window_starts, strict=True):
        history = entries[purchase.customer_id]
        tier, _ = tier_for(tiers, max(0, _qualifying(history, window_start, occurred_at)))
        earning = purchase_points(
            rules, tier.earn_multiplier if tier else Decimal(1), occurred_at, purchase.total, purchase.items
        )
        if earning.points >= MAX_POINTS:
            log.warning("points.purchase.refused", purchase_id=purchase.purchase_id, reason="points_out_of_range")
            continue
        if earning.points > 0:
            before, _ = tier_for(tiers, max(0, _qualifying(history, now_since, now)))
            history.append((occurred_at, earning.points))
            after, _ = tier_for(tiers, max(0, _qualifying(history, now_since, now)))
            if (before and before.name) != (after and after.name):
                # nothing written yet: the run goes one at a time, each announcing its change in its place
                for one, at in run:
                    await earn_for_purchase(session, one, at)
                return
            credits.append(
                repository.Credit(
                    purchase.customer_id,
                    earning.points,
                    purchase.purchase_id,
                    f"Purchase {purchase.purchase_id}",
                    _expires_at(rules, occurred_at),
                )
            )
        earned.append((purchase, earning.points, occurred_at))
    movements = iter(await repository.credit_many(session, "earn", credits) if credits else [])
    qualifications: list[tuple[int, datetime, int | None]] = []
    lots: list[int | None] = []
    for purchase, points, occurred_at in earned:
        if points <= 0:
            lots.append(None)
            continue
        movement = next(movements)
        if movement.outcome != "created" or movement.transaction_id is None or movement.points != points:
            raise _RunDiverged(f"purchase {purchase.purchase_id}: {movement.outcome}")
        qualifications.append((movement.transaction_id, occurred_at, None))
        lots.append(movement.lot_id)
    await repository.record_qualifications(session, qualifications)
    await repository.expire_accounts(
        session, sorted({c.customer_id for c in credits if _born_expired(c.expires_at, now)})
    )
    await repository.record_purchase_earnings(
        session,
        [
            repository.PurchaseEarning(p.customer_id, p.purchase_id, points, lot, p.total, p.currency, at)
            for (p, points, at), lot in zip(earned, lots, strict=True)
        ],
    )
    log.info("points.purchases.earned", purchases=len(earned), credited=len(credits))


async def earn_survey_reward(session: AsyncSession, customer_id: str, invitation_id: str, points: int) -> None:
    rules = await get_rules(session)
    tier_before = await current_tier(session, customer_id)
    movement = _in_range(
        await repository.credit(
            session, customer_id, "earn", points, f"survey:{invitation_id}", "Survey reward", _expires_at(rules)
        )
    )
    if movement.outcome == "created":
        await announce_tier_change(session, customer_id, tier_before)


async def adjust(session: AsyncSession, customer_id: str, body: AdjustmentRequest) -> PointsResult:
    """A signed correction; the answer's `points` is the signed points of the (first) transaction."""
    description = body.description or "Adjustment"
    if body.points > 0:
        rules = await get_rules(session)
        movement = await repository.credit(
            session, customer_id, "adjust", body.points, body.reference, description, _expires_at(rules)
        )
        return _result(movement)
    movement = await repository.debit(session, customer_id, "adjust", -body.points, body.reference, description)
    # the debit function answers the points taken away as a positive number
    return _result(movement).model_copy(update={"points": -movement.points})


async def import_balances(session: AsyncSession, lines: ParsedLines[OpeningBalance]) -> ImportReport:
    """Opening balances: each line an `adjust` transaction and a lot expiring at its `expires_at` (by the rules
    from now when absent), idempotent by `reference` per customer. `qualifying_points` carry a tier over: they
    count as earned now. Every line is applied by one set-based statement in the request's transaction
    (`repository.credit_lines`), so each commits whole or not at all; the rare member whose balance would
    leave the range goes line by line through the ledger's credit function, which refuses just that line."""
    rules = await get_rules(session)
    now = await repository.now(session)
    default_expiry = _expires_at(rules, now)
    credits = [
        repository.OpeningCredit(
            line.customer_id,
            line.points,
            line.reference,
            line.description or "Opening balance",
            utc(line.expires_at) if line.expires_at else default_expiry,
            line.qualifying_points or None,
        )
        for _, line in lines.valid
    ]
    outcomes = await repository.credit_lines(session, "adjust", credits) if credits else {}
    deferred = [index for index, outcome in outcomes.items() if outcome == "deferred"]
    if deferred:
        slow = [credits[index] for index in deferred]
        movements = await repository.credit_many(
            session,
            "adjust",
            [repository.Credit(c.customer_id, c.points, c.reference, c.description, c.expires_at) for c in slow],
        )
        qualifications: list[tuple[int, datetime, int]] = []
        for index, credit, movement in zip(deferred, slow, movements, strict=True):
            outcomes[index] = movement.outcome
            if movement.outcome == "created" and movement.transaction_id is not None and credit.qualifying_points:
                qualifications.append((movement.transaction_id, now, credit.qualifying_points))
        await repository.record_qualifications(session, qualifications)
    duplicates = 0
    refused: list[RejectedLine] = []
    for index, outcome in outcomes.items():
        if outcome == "replayed":
            duplicates += 1
        elif outcome != "created":
            number = lines.valid[index][0]
            refused.append(RejectedLine(line=number, errors=[FieldError("points", outcome)]))
    accepted = len(credits) - duplicates - len(refused)
    log.info("points.balances.imported", accepted=accepted, duplicates=duplicates, rejected=len(refused))
    return lines.report(accepted, duplicates, refused)


# --- redemption ---


async def redeem(session: AsyncSession, customer_id: str, body: RedemptionRequest) -> PointsResult:
    movement = await repository.redeem(session, customer_id, body.points, body.reference, body.description or "")
    if movement.outcome == "insufficient":
        log.info("points.redeem.refused", customer_id=customer_id, reason="insufficient_points")
        raise Conflict(
            "Not enough points for this redemption.",
            code="insufficient_points",
            balance=movement.balance,
            requested=body.points,
            keep_changes=True,  # the lots found expired on the way stay expired: the balance shows it at once
        )
    return _result(movement)


# --- reversal ---


def reversal_target(earned: int, total: Decimal, refunded: Decimal, full: bool) -> int:
    """How many of a purchase's points stand reversed once `refunded` of its `total` is refunded."""
    if full or total <= 0 or refunded >= total:
        return earned
    return math.floor(Decimal(earned) * refunded / total)


async def reverse_purchase(
    session: AsyncSession,
    customer_id: str,
    purchase_id: str,
    refund_id: str,
    amount: Decimal | None,
) -> ReversalResult:
    """Reverse what a purchase earned, in full (amount None) or pro rata; a refund id counts once."""
    await repository.lock_account(session, customer_id)
    previous = await repository.find_refund(session, customer_id, refund_id)
    if previous is not None:
        return ReversalResult(
            purchase_reference=previous.purchase_id,
            refund_reference=refund_id,
            transaction_id=previous.transaction_id,
            points=previous.points,
            balance=previous.balance,
        )
    purchase = await repository.lock_purchase(session, customer_id, purchase_id)
    if purchase is None:
        raise NotFound("No points were earned for this purchase.", code="purchase_not_found")
    if amount is not None:
        decimals = CURRENCY_DECIMALS.get(purchase.currency, 2)
        exponent = amount.normalize().as_tuple().exponent
        if amount <= 0 or (isinstance(exponent, int) and -exponent > decimals):
            raise ValidationFailed([FieldError("amount", f"A positive {purchase.currency} amount.")])
    refunded = purchase.total if amount is None else min(purchase.total, purchase.refunded_amount + amount)
    target = reversal_target(purchase.points, purchase.total, refunded, amount is None)
    points = max(0, target - purchase.reversed_points)
    transaction_id: int | None = None
    if points > 0:
        tier_before = await current_tier(session, customer_id)
        movement = _in_range(
            await repository.debit(
                session,
                customer_id,
                "reverse",
                points,
                refund_id,
                f"Refund {refund_id} of purchase {purchase_id}",
                purchase.lot_id,
            )
        )
        transaction_id, balance = movement.transaction_id, movement.balance
        if movement.outcome == "created" and transaction_id is not None and purchase.occurred_at is not None:
            # a refund takes back the purchase's qualifying points from the window they were counted in
            await repository.record_qualification(session, transaction_id, purchase.occurred_at)
        if movement.outcome == "created":
            await announce_tier_change(session, customer_id, tier_before)
    else:
        balance = await repository.account_balance(session, customer_id)
    await repository.record_refund(
        session, customer_id, refund_id, purchase_id, amount, points, transaction_id, balance, refunded
    )
    log.info("points.reversed", customer_id=customer_id, purchase_id=purchase_id, refund_id=refund_id, points=points)
    return ReversalResult(
        purchase_reference=purchase_id,
        refund_reference=refund_id,
        transaction_id=transaction_id,
        points=points,
        balance=balance,
    )


async def reverse_refund(session: AsyncSession, refund: PurchaseRefunded) -> None:
    await reverse_purchase(session, refund.customer_id, refund.purchase_id, refund.refund_id, refund.amount)


async def create_reversal(session: AsyncSession, customer_id: str, body: ReversalRequest) -> ReversalResult:
    return await reverse_purchase(session, customer_id, body.purchase_reference, body.refund_reference, body.amount)


# --- reads ---


async def balance(session: AsyncSession, customer_id: str) -> Balance:
    row = await repository.balance_view(session, customer_id, EXPIRING_SHOWN)
    qualifying = max(0, row.qualifying)
    current, following = tier_for(_tiers(row.tiers), qualifying)
    return Balance(
        customer_id=customer_id,
        balance=row.balance,
        tier=current.name if current else None,
        qualifying_points=qualifying,
        next_tier=NextTier(name=following.name, points_needed=following.threshold - qualifying) if following else None,
        expiring=[Expiring.model_validate(e) for e in row.expiring],
    )


def _transaction(entry: repository.LedgerEntry) -> Transaction:
    reward = {
        "redemption_id": entry.reward_redemption_id,
        "reward_id": entry.reward_id,
        "name": entry.reward_name,
        "status": entry.reward_status,
    }
    return Transaction.model_validate(
        {
            "id": entry.id,
            "type": entry.type,
            "points": entry.points,
            "balance_after": entry.balance_after,
            "reference": entry.reference,
            "description": entry.description,
            "created_at": entry.created_at,
            "reward": reward if entry.reward_redemption_id is not None else None,
        }
    )


async def transactions(
    session: AsyncSession, customer_id: str, limit: int, after: tuple[int] | None
) -> tuple[list[Transaction], int | None]:
    before_id = after[0] if after is not None else None
    rows = await repository.list_transactions(session, customer_id, limit + 1, before_id)
    items = [_transaction(row) for row in rows[:limit]]
    return items, (items[-1].id if len(rows) > limit else None)


# --- expiry and reports ---


async def run_expiry(session: AsyncSession) -> ExpiryRun:
    """Expire every lot due by now, in batches of accounts, in the caller's transaction."""
    ran_at = await repository.now(session)
    accounts = lots = points = 0
    while True:
        batch = await repository.expire_batch(session, ran_at, EXPIRY_BATCH)
        accounts, lots, points = accounts + batch[0], lots + batch[1], points + batch[2]
        if batch[0] < EXPIRY_BATCH:
            break
    if lots:
        log.info("points.expired", accounts=accounts, lots=lots, points=points)
    return ExpiryRun(accounts=accounts, lots_expired=lots, points_expired=points, ran_at=ran_at)


async def expire_due(database: Database) -> ExpiryRun:
    """The periodic job: like run_expiry, but each batch of accounts commits on its own, so a long run never
    holds many account locks for long."""
    async with database.transaction() as session:
        ran_at = await repository.now(session)
    accounts = lots = points = 0
    while True:
        async with database.transaction() as session:
            batch = await repository.expire_batch(session, ran_at, EXPIRY_BATCH)
        accounts, lots, points = accounts + batch[0], lots + batch[1], points + batch[2]
        if batch[0] < EXPIRY_BATCH:
            break
    if lots:
        log.info("points.expired", accounts=accounts, lots=lots, points=points, source="schedule")
    return ExpiryRun(accounts=accounts, lots_expired=lots, points_expired=points, ran_at=ran_at)


async def liability(session: AsyncSession) -> Liability:
    by_month, negative, holders = await repository.liability(session)
    pending_points, pending_redemptions = await reward_repository.pending_totals(session)
    return Liability(
        pending_reward_points=pending_points,
        pending_reward_redemptions=pending_redemptions,
        total_points=sum(m.points for m in by_month),
        negative_balance_points=negative,
        accounts_with_points=holders,
        by_expiry_month=by_month,
    )


async def audit(session: AsyncSession) -> Audit:
    checked, mismatches = await repository.audit(session, AUDIT_MISMATCH_LIMIT)
    return Audit(accounts_checked=checked, mismatches=mismatches)
