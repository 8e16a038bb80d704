"""The rewards catalogue: rewards priced in points, their redemption, fulfilment and cancellation, coupon rewards
issued by the coupon service, gifts granted by surprise rules, and the catalogue as one customer sees it.

Consistency (docs/rewards.md): the points, the stock and the redemption commit together in one statement
(migration points_rewards). A coupon reward first reserves (points debited, stock taken, redemption `issuing`,
committed), then asks the coupon service for a code keyed by the redemption id; a definitive answer settles it
(`fulfilled` with the code, or cancelled with the points and the stock back); no answer leaves it `issuing` for
the retry job, which asks again with the same key until the deadline and then voids the key instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from kit import experiments
from kit.auth import Caller
from kit.contracts import GiftGranted
from kit.db import Database, own_driver_connection, request_driver_connection
from kit.errors import Conflict, FieldError, NotFound, ServiceUnavailable, Unprocessable, ValidationFailed
from kit.json import dumps
from kit.leases import Backoff
from kit.pagination import Page, PageParams, encode_cursor
from points import reward_repository as repo
from points import service
from points.coupons import CouponClient, IssueAnswer
from points.schemas import (
    CustomerReward,
    Reward,
    RewardCreate,
    RewardPatch,
    RewardRedemption,
    RewardRedemptionRequest,
    RewardRedemptionResult,
)

log = structlog.get_logger("points.rewards")

ISSUING_BATCH = 50
DEFAULT_TIERS_JSON = dumps([t.model_dump(mode="json") for t in service.DEFAULT_TIERS]).decode()


@dataclass
class RewardsRuntime:
    """What the rewards need besides a session: the database (for statements that commit on their own), the
    coupon service, and the values app.py took from the settings."""

    database: Database
    coupons: CouponClient
    retry_after: timedelta  # how long a coupon call may take: an answer is due by then
    issue_deadline: timedelta  # past it, an unknown code is voided and the points given back
    retry_backoff: Backoff  # before asking the coupon service again about an unknown code


async def _check_tier(session: AsyncSession, name: str | None) -> None:
    if name is not None and name not in {t.name for t in await service.get_tiers(session)}:
        raise ValidationFailed([FieldError("min_tier", f"No tier named {name!r} (GET /v1/points/tiers).")])


async def _check_campaign(runtime: RewardsRuntime, campaign_id: uuid.UUID | None) -> None:
    if campaign_id is None:
        return
    exists = await runtime.coupons.campaign_exists(campaign_id)
    if exists is None:
        raise ServiceUnavailable(
            "The coupon service did not answer; the campaign could not be checked. Retry shortly.",
            code="coupon_service_unavailable",
            headers={"Retry-After": "5"},
        )
    if not exists:
        raise ValidationFailed([FieldError("campaign_id", "No coupon campaign with this id.")])


# --- the catalogue ---


async def create_reward(session: AsyncSession, runtime: RewardsRuntime, body: RewardCreate) -> Reward:
    await _check_tier(session, body.min_tier)
    await _check_campaign(runtime, body.campaign_id)
    row = await repo.insert_reward(session, {"id": uuid.uuid4(), **body.model_dump()})
    log.info("points.reward.created", reward_id=str(row.id), kind=row.kind)
    return row


async def get_reward(session: AsyncSession, reward_id: uuid.UUID, caller: Caller | None = None) -> Reward:
    row = await repo.get_reward(session, reward_id)
    if row is None or (caller is not None and caller.kind == "customer" and not row.active):
        raise NotFound("No reward with this id.", code="reward_not_found")
    return row


async def list_rewards(session: AsyncSession, caller: Caller, active: bool | None, page: PageParams) -> Page[Reward]:
    if caller.kind == "customer":
        active = True  # a customer sees the catalogue as it is offered
    rows = await repo.list_rewards(session, active, page.after(int, uuid.UUID), page.limit + 1)
    items = list(rows[: page.limit])
    cursor = encode_cursor([items[-1].cost_points, str(items[-1].id)]) if len(rows) > page.limit else None
    return Page[Reward](items=items, next_cursor=cursor)


async def update_reward(
    session: AsyncSession, runtime: RewardsRuntime, reward_id: uuid.UUID, body: RewardPatch
) -> Reward:
    fields = body.model_dump(exclude_unset=True)
    for name in ("name", "description", "cost_points", "active"):
        if name in fields and fields[name] is None:
            raise ValidationFailed([FieldError(name, "Cannot be null.")])
    # FOR UPDATE waits for every redemption in flight (they hold the row FOR KEY SHARE or have updated it)
    row = await repo.get_reward(session, reward_id, lock=True)
    if row is None:
        raise NotFound("No reward with this id.", code="reward_not_found")
    if "campaign_id" in fields:
        if row.kind != "coupon" or fields["campaign_id"] is None:
            raise ValidationFailed([FieldError("campaign_id", "Only a coupon reward has a campaign; not null.")])
        await _check_campaign(runtime, fields["campaign_id"])
    if "min_tier" in fields:
        await _check_tier(session, fields["min_tier"])
    if "stock" in fields:
        stock = fields["stock"]
        if stock is None:
            fields["stock_left"] = None
        else:
            if row.stock is None or row.stock_left is None:
                standing = await repo.standing_redemptions(session, reward_id)
            else:
                standing = row.stock - row.stock_left
            if stock < standing:
                raise ValidationFailed(
                    [FieldError("stock", f"{standing} units are redeemed already (pending, issuing or fulfilled).")]
                )
            fields["stock_left"] = stock - standing
    if not fields:
        return row
    return await repo.update_reward(session, reward_id, fields)


async def customer_rewards(
    session: AsyncSession, customer_id: str, affordable: bool | None, available: bool | None, page: PageParams
) -> Page[CustomerReward]:
    tiers = [(t.name, t.threshold) for t in await service.get_tiers(session)]
    rows = await repo.customer_view(
        session, customer_id, tiers, affordable, available, page.after(int, uuid.UUID), page.limit + 1
    )
    items = [
        CustomerReward.model_validate(
            {
                **row.reward.model_dump(),
                "affordable": row.reward.cost_points <= row.balance,
                "points_needed": max(0, row.reward.cost_points - row.balance),
                "available": row.reason is None,
                "reason": row.reason,
            }
        )
        for row in rows[: page.limit]
    ]
    cursor = encode_cursor([items[-1].cost_points, str(items[-1].id)]) if len(rows) > page.limit else None
    return Page[CustomerReward](items=items, next_cursor=cursor)


async def overview_parts(session: AsyncSession, customer_id: str, closest: int) -> dict[str, Any]:
    """What the customer overview shows of points, for the gateway's read model in one request: the balance and
    the `closest` rewards the customer may redeem but cannot afford yet (the public routes' very answers)."""
    balance = await service.balance(session, customer_id)
    rewards = await customer_rewards(session, customer_id, False, True, PageParams(closest))
    return {"points": balance.model_dump(mode="json"), "rewards": rewards.model_dump(mode="json")}


# --- redemption ---

_REFUSALS: dict[str, tuple[type[Conflict] | type[Unprocessable], str, str]] = {
    "insufficient": (Conflict, "insufficient_points", "Not enough points for this reward."),
    "out_of_stock": (Conflict, "out_of_stock", "This reward is out of stock."),
    "limit_reached": (Conflict, "reward_limit_reached", "This customer has redeemed this reward as often as allowed."),
    "inactive": (Unprocessable, "reward_not_available", "This reward is not offered at the moment."),
    "tier_too_low": (Unprocessable, "reward_not_available", "This reward needs a higher tier."),
}


def _not_issued(redemption_id: uuid.UUID) -> Unprocessable:
    return Unprocessable(
        "The coupon for this reward could not be issued; the points and the stock were given back.",
        code="reward_not_available",
        reason="coupon_not_issued",
        redemption_id=str(redemption_id),
    )


async def redeem(
    runtime: RewardsRuntime,
    customer_id: str,
    body: RewardRedemptionRequest,
    in_transaction: AsyncSession | None = None,
) -> tuple[RewardRedemptionResult, int, uuid.UUID | None]:
    """The redemption, the HTTP status to answer it with (201, or 202 while a coupon is being issued), and the
    redemption to settle once the answer is sent (None: nothing to do).

    `in_transaction`: the request's session when it holds a transaction (an Idempotency-Key was claimed): the
    redemption then commits with the stored answer, so a coupon reward cannot be asked for its code before the
    answer is sent; the caller settles it right after."""
    args = (
        customer_id,
        body.reward_id,
        body.reference,
        uuid.uuid4(),
        False,
        DEFAULT_TIERS_JSON,
        runtime.retry_after,
        runtime.issue_deadline,
    )
    if in_transaction is not None:
        row = await repo.redeem(await request_driver_connection(in_transaction), *args)
    else:
        async with own_driver_connection(runtime.database) as connection:
            row = await repo.redeem(connection, *args)
    outcome = row.outcome
    if outcome == "reward_not_found":
        raise NotFound("No reward with this id.", code="reward_not_found")
    if outcome in _REFUSALS:
        kind, code, detail = _REFUSALS[outcome]
        extra: dict[str, Any] = {}
        if outcome == "insufficient":
            extra = {"balance": row.balance, "requested": row.points}
        elif kind is Unprocessable:
            extra = {"reason": outcome}
        log.info("points.reward.refused", customer_id=customer_id, reason=outcome)
        raise kind(detail, code=code, **extra)
    if outcome == "replayed" and row.reward_id != body.reward_id:
        raise Conflict("This reference was used for another reward by this customer.", code="reference_already_used")
    result = RewardRedemptionResult.model_validate(row, from_attributes=True)
    if result.status == "cancelled" and row.cancel_reason == "coupon_not_issued":
        raise _not_issued(result.redemption_id)
    if result.status == "issuing":
        if in_transaction is not None:
            return result, 202, result.redemption_id
        assert row.campaign_id is not None  # only a coupon reward waits for its code
        settled = await settle(runtime, result.redemption_id, row.campaign_id, customer_id)
        if settled == "issuing":
            return result, 202, None
        if settled == "cancelled":
            raise _not_issued(result.redemption_id)
        async with own_driver_connection(runtime.database) as connection:
            state = await repo.find_redemption_state(connection, result.redemption_id)
        assert state is not None
        result = result.model_copy(update={"status": state.status, "coupon_code": state.coupon_code})
    if outcome == "created":
        log.info("points.reward.redeemed", customer_id=customer_id, reward_id=str(body.reward_id), status=result.status)
    return result, 201, None


async def settle(
    runtime: RewardsRuntime, redemption_id: uuid.UUID, campaign_id: uuid.UUID, customer_id: str, *, void: bool = False
) -> str:
    """Ask the coupon service once about a redemption waiting for its code (`void`: past its deadline, void the
    key instead of issuing) and apply a definitive answer. Returns the redemption's status afterwards."""
    answer: IssueAnswer | None
    if void:
        answer = await runtime.coupons.void(redemption_id)
    else:
        answer = await runtime.coupons.issue(redemption_id, campaign_id, customer_id)
    if answer is None:
        return "issuing"
    if answer.status == "issued" and not answer.code:
        log.error("points.reward.coupon_without_code", redemption_id=str(redemption_id))
        return "issuing"  # not an answer to act on: only `refused` or `voided` may give the points back
    async with own_driver_connection(runtime.database) as connection:
        if answer.status == "issued" and answer.code:
            if await repo.fulfil_coupon(connection, redemption_id, answer.code):
                log.info("points.reward.coupon_issued", redemption_id=str(redemption_id))
            return "fulfilled"
        row = await repo.cancel(connection, redemption_id, None, ["issuing"], "coupon_not_issued")
        log.info(
            "points.reward.coupon_not_issued",
            redemption_id=str(redemption_id),
            answer=answer.status,
            reason=answer.reason,
            outcome=row.outcome,
        )
        return str(row.status)


async def settle_issuing(runtime: RewardsRuntime) -> int:
    """The retry job: every redemption whose code is still unknown and whose next attempt is due. Each is leased
    for the time a coupon call may take; one still unknown after it is due again after the kit's backoff."""
    async with runtime.database.engine.begin() as connection:
        due = await repo.claim_issuing(connection, ISSUING_BATCH, runtime.retry_after.total_seconds())
    for row in due:
        status = await settle(runtime, row.id, row.campaign_id, row.customer_id, void=row.past_deadline)
        if status == "issuing":
            log.warning("points.reward.still_issuing", redemption_id=str(row.id), past_deadline=row.past_deadline)
            async with runtime.database.engine.begin() as connection:
                await repo.retry_issuing(connection, row.id, runtime.retry_backoff.delay(row.issue_attempts))
    return len(due)


async def list_redemptions(session: AsyncSession, customer_id: str, page: PageParams) -> Page[RewardRedemption]:
    rows = await repo.list_redemptions(session, customer_id, page.after(datetime, uuid.UUID), page.limit + 1)
    return _redemption_page(rows, page)


def _redemption_page(rows: Sequence[RewardRedemption], page: PageParams) -> Page[RewardRedemption]:
    """Rows sorted by (created_at, id) descending, one more than the page when there is a next one."""
    items = list(rows[: page.limit])
    cursor = (
        encode_cursor([items[-1].created_at.isoformat(), str(items[-1].redemption_id)])
        if len(rows) > page.limit
        else None
    )
    return Page[RewardRedemption](items=items, next_cursor=cursor)


async def list_pending(session: AsyncSession, page: PageParams) -> Page[RewardRedemption]:
    """Items waiting to be handed over, across all customers, newest first."""
    rows = await repo.list_pending(session, page.after(datetime, uuid.UUID), page.limit + 1)
    return _redemption_page(rows, page)


async def _redemption(session: AsyncSession, redemption_id: uuid.UUID, caller: Caller) -> RewardRedemption:
    row = await repo.get_redemption(session, redemption_id)
    if row is None or (caller.kind == "customer" and row.customer_id != caller.id):
        raise NotFound("No reward redemption with this id.", code="redemption_not_found")
    return row


async def fulfil(session: AsyncSession, caller: Caller, redemption_id: uuid.UUID) -> RewardRedemption:
    """An item handed over. A repeat answers the fulfilled redemption."""
    row = await _redemption(session, redemption_id, caller)
    if row.status == "pending" and await repo.fulfil(session, redemption_id):
        log.info("points.reward.fulfilled", redemption_id=str(redemption_id))
    elif row.status != "fulfilled" or row.kind != "item":
        raise Conflict(
            f"This redemption is {row.status}; only a pending item can be marked handed over.",
            code="redemption_not_pending",
            redemption_status=row.status,
        )
    found = await repo.get_redemption(session, redemption_id)
    assert found is not None
    return found


async def cancel(session: AsyncSession, caller: Caller, redemption_id: uuid.UUID) -> RewardRedemption:
    """Points and stock back, once. A customer cancels its own pending items; the shop (admin, `points:write`)
    also a fulfilled item (returned goods). A coupon reward's code is out once issued: never cancelled here."""
    row = await _redemption(session, redemption_id, caller)
    by_customer = caller.kind == "customer"
    allowed = ["pending"] if by_customer or row.kind != "item" else ["pending", "fulfilled"]
    done = await repo.cancel(
        await request_driver_connection(session),
        redemption_id,
        caller.id if by_customer else None,
        allowed,
        "customer" if by_customer else "shop",
    )
    if done.outcome == "not_found":
        raise NotFound("No reward redemption with this id.", code="redemption_not_found")
    if done.outcome == "not_cancellable":
        raise Conflict(
            f"This redemption is {done.status} and cannot be cancelled" + (" by the customer." if by_customer else "."),
            code="redemption_not_cancellable",
            redemption_status=done.status,
        )
    if done.outcome == "cancelled":
        log.info("points.reward.cancelled", redemption_id=str(redemption_id), by=caller.kind)
    found = await repo.get_redemption(session, redemption_id)
    assert found is not None
    return found


async def settle_one(runtime: RewardsRuntime, redemption_id: uuid.UUID) -> None:
    """Settle one redemption now if it still waits for its code (the retry job would, a little later)."""
    async with own_driver_connection(runtime.database) as connection:
        state = await repo.find_redemption_state(connection, redemption_id)
    if state is not None and state.status == "issuing" and state.campaign_id is not None:
        await settle(runtime, redemption_id, state.campaign_id, state.customer_id)


async def grant_gift(session: AsyncSession, gift: GiftGranted) -> None:
    """A surprise rule's gift: the catalogue item at no cost (stock is taken; tier and limit do not apply), in
    the event's transaction, once per grant. A reward that is unknown, inactive or out of stock grants nothing.
    Under an experiment, a granted gift's cost is the catalogue item's price in points, reported to the gateway
    in the same transaction (docs/experiments.md)."""
    row = await repo.redeem_in_session(
        session,
        gift.customer_id,
        gift.reward_id,
        f"gift:{gift.grant_id}",
        uuid.uuid4(),
        True,
        DEFAULT_TIERS_JSON,
        timedelta(0),  # a coupon gift's code is asked for by the retry job
        timedelta(days=1),
    )
    log.info(
        "points.reward.gift",
        customer_id=gift.customer_id,
        reward_id=str(gift.reward_id),
        rule_id=str(gift.rule_id),
        outcome=row.outcome,
    )
    if gift.experiment_id is not None and row.outcome == "created":
        reward = await repo.get_reward(session, gift.reward_id)
        price = reward.cost_points if reward is not None else 0
        await experiments.report_cost(
            session, gift.experiment_id, gift.customer_id, key=f"gift-cost:{gift.grant_id}", points=price
        )
