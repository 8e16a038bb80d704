"""SQL of the rewards catalogue.

Redemption and cancellation are PL/pgSQL functions of migration points_rewards, each one statement. A
redemption runs on a connection of its own in autocommit (`kit.db.own_driver_connection`) unless the request
already holds a transaction: a coupon reward's reservation must be committed before the coupon service is
asked for a code (were it rolled back after the code was issued, the customer would keep both). A request never
holds two connections at once (a pool of N would deadlock under N concurrent requests).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kit.leases import DueRows, claim_due
from points.repository import _QUALIFYING, SPENDABLE_BALANCE
from points.schemas import Reward, RewardRedemption

REWARD_COLUMNS = """
    w.id, w.name, w.description, w.kind, w.cost_points, w.campaign_id, w.stock, w.stock_left,
    w.per_customer_limit, w.min_tier, w.active, w.image_url, w.created_at, w.updated_at
"""

REDEMPTION_COLUMNS = """
    d.id AS redemption_id, d.reward_id, w.name AS reward_name, w.kind, d.customer_id, d.reference, d.source,
    d.points, d.status, d.coupon_code, d.cancel_reason, d.created_at, d.fulfilled_at, d.cancelled_at
"""


@dataclass(frozen=True)
class OfferedReward:
    """A reward as one customer sees it: their balance, and why they cannot redeem it (None: they can)."""

    reward: Reward
    balance: int
    reason: str | None


@dataclass(frozen=True)
class RedemptionOutcome:
    """What `points_redeem_reward` answered (its columns, in order); only `outcome` when the reward is unknown."""

    outcome: str  # created | replayed | reward_not_found | insufficient | out_of_stock | limit_reached | ...
    redemption_id: uuid.UUID | None
    reward_id: uuid.UUID | None
    points: int | None
    balance: int | None
    status: str | None
    coupon_code: str | None
    cancel_reason: str | None
    kind: str | None
    campaign_id: uuid.UUID  # only coupon rewards wait for their coupon, and they name their campaign
    name: str | None
    created_at: datetime | None


@dataclass(frozen=True)
class CancelOutcome:
    """What `points_cancel_reward_redemption` answered."""

    outcome: str  # cancelled | not_found | not_cancellable | ...
    status: str | None
    balance: int | None


@dataclass(frozen=True)
class RedemptionState:
    status: str
    coupon_code: str | None
    cancel_reason: str | None
    points: int
    balance_after: int | None
    issue_deadline: datetime | None
    campaign_id: uuid.UUID  # only coupon rewards wait for their coupon, and they name their campaign
    customer_id: str
    now: datetime


_REDEEM = "SELECT * FROM points_redeem_reward($1, $2, $3, $4, $5, $6::jsonb, $7, $8)"


async def redeem(
    connection: asyncpg.Connection,
    customer_id: str,
    reward_id: uuid.UUID,
    reference: str,
    redemption_id: uuid.UUID,
    gift: bool,
    default_tiers: str,
    retry_after: timedelta,
    issue_deadline: timedelta,
) -> RedemptionOutcome:
    row = await connection.fetchrow(
        _REDEEM, customer_id, reward_id, reference, redemption_id, gift, default_tiers, retry_after, issue_deadline
    )
    assert row is not None
    return RedemptionOutcome(*row)


async def redeem_in_session(session: AsyncSession, *args: Any) -> RedemptionOutcome:
    """The same function inside the caller's transaction (an event handler's: the gift and the inbox record
    commit together)."""
    row = (
        await session.execute(
            text(
                "SELECT * FROM points_redeem_reward(:c, :r, :ref, :id, :gift, CAST(:tiers AS jsonb), :retry, :deadline)"
            ),
            dict(zip(("c", "r", "ref", "id", "gift", "tiers", "retry", "deadline"), args, strict=True)),
        )
    ).one()
    return RedemptionOutcome(*row)


_CANCEL = "SELECT * FROM points_cancel_reward_redemption($1, $2, $3::varchar[], $4)"


async def cancel(
    connection: asyncpg.Connection, redemption_id: uuid.UUID, customer_id: str | None, from_: list[str], reason: str
) -> CancelOutcome:
    row = await connection.fetchrow(_CANCEL, redemption_id, customer_id, from_, reason)
    assert row is not None
    return CancelOutcome(*row)


async def fulfil_coupon(connection: asyncpg.Connection, redemption_id: uuid.UUID, code: str) -> bool:
    done = await connection.fetchval(
        "UPDATE reward_redemptions SET status = 'fulfilled', coupon_code = $2, fulfilled_at = now() "
        "WHERE id = $1 AND status = 'issuing' RETURNING id",
        redemption_id,
        code,
    )
    return done is not None


async def find_redemption_state(connection: asyncpg.Connection, redemption_id: uuid.UUID) -> RedemptionState | None:
    row = await connection.fetchrow(
        "SELECT d.status, d.coupon_code, d.cancel_reason, d.points, d.balance_after, d.issue_deadline, "
        "d.campaign_id, d.customer_id, now() AS now FROM reward_redemptions d WHERE d.id = $1",
        redemption_id,
    )
    return None if row is None else RedemptionState(*row)


_ISSUING = DueRows(
    table="reward_redemptions",
    waiting="d.status = 'issuing'",
    also_set="issue_attempts = d.issue_attempts + 1",
    returning="d.id, d.customer_id, d.campaign_id, d.issue_attempts, d.issue_deadline <= now() AS past_deadline",
)


@dataclass(frozen=True, slots=True)
class IssuingRedemption:
    """A redemption waiting for its coupon, claimed for one more attempt."""

    id: uuid.UUID
    customer_id: str
    campaign_id: uuid.UUID  # only coupon rewards wait for their coupon, and they name their campaign
    issue_attempts: int
    past_deadline: bool


async def claim_issuing(connection: AsyncConnection, limit: int, lease_seconds: float) -> list[IssuingRedemption]:
    """Redemptions waiting for their coupon whose next attempt is due, leased to this process (replicas share
    the work; a lease that lapses because this process died is taken by another)."""
    return await claim_due(connection, _ISSUING, IssuingRedemption, batch=limit, lease_seconds=lease_seconds)


async def retry_issuing(connection: AsyncConnection, redemption_id: uuid.UUID, delay_seconds: float) -> None:
    """A redemption whose code is still unknown is due again after `delay_seconds`."""
    await connection.execute(
        text(
            "UPDATE reward_redemptions SET next_attempt_at = now() + make_interval(secs => :delay) "
            "WHERE id = :id AND status = 'issuing'"
        ),
        {"id": redemption_id, "delay": delay_seconds},
    )


# --- the catalogue ---


async def insert_reward(session: AsyncSession, values: dict[str, Any]) -> Reward:
    row = (
        await session.execute(
            text(
                f"""
                INSERT INTO rewards AS w (id, name, description, kind, cost_points, campaign_id, stock, stock_left,
                    per_customer_limit, min_tier, active, image_url)
                VALUES (:id, :name, :description, :kind, :cost_points, :campaign_id, :stock, :stock,
                    :per_customer_limit, :min_tier, :active, :image_url)
                RETURNING {REWARD_COLUMNS}
                """
            ),
            values,
        )
    ).one()
    return Reward.model_validate(row, from_attributes=True)


async def get_reward(session: AsyncSession, reward_id: uuid.UUID, *, lock: bool = False) -> Reward | None:
    row = (
        await session.execute(
            text(f"SELECT {REWARD_COLUMNS} FROM rewards w WHERE w.id = :id" + (" FOR UPDATE" if lock else "")),
            {"id": reward_id},
        )
    ).first()
    return None if row is None else Reward.model_validate(row, from_attributes=True)


async def standing_redemptions(session: AsyncSession, reward_id: uuid.UUID) -> int:
    return int(
        (
            await session.execute(
                text("SELECT count(*) FROM reward_redemptions WHERE reward_id = :id AND status <> 'cancelled'"),
                {"id": reward_id},
            )
        ).scalar_one()
    )


async def update_reward(session: AsyncSession, reward_id: uuid.UUID, fields: dict[str, Any]) -> Reward:
    sets = ", ".join(f"{name} = :{name}" for name in fields)
    row = (
        await session.execute(
            text(f"UPDATE rewards w SET {sets}, updated_at = now() WHERE w.id = :id RETURNING {REWARD_COLUMNS}"),
            {"id": reward_id, **fields},
        )
    ).one()
    return Reward.model_validate(row, from_attributes=True)


async def list_rewards(
    session: AsyncSession, active: bool | None, after: tuple[int, uuid.UUID] | None, limit: int
) -> list[Reward]:
    rows = await session.execute(
        text(
            f"""
                SELECT {REWARD_COLUMNS} FROM rewards w
                 WHERE (CAST(:active AS boolean) IS NULL OR w.active = :active)
                   AND (CAST(:after_cost AS bigint) IS NULL OR (w.cost_points, w.id) > (:after_cost, :after_id))
                 ORDER BY w.cost_points, w.id LIMIT :limit
                """
        ),
        {
            "active": active,
            "after_cost": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return [Reward.model_validate(row, from_attributes=True) for row in rows]


_CUSTOMER_VIEW = f"""
WITH me AS (
    SELECT coalesce({SPENDABLE_BALANCE}, 0) AS balance,
           greatest({_QUALIFYING}, 0) AS qualifying
), seen AS (
    SELECT {REWARD_COLUMNS}, me.balance,
           CASE WHEN w.stock_left = 0 THEN 'out_of_stock'
                WHEN w.min_tier IS NOT NULL AND (tier.threshold IS NULL OR me.qualifying < tier.threshold)
                     THEN 'tier_too_low'
                WHEN w.per_customer_limit IS NOT NULL AND w.per_customer_limit <= (
                     SELECT count(*) FROM reward_redemptions d
                      WHERE d.customer_id = :c AND d.reward_id = w.id AND d.status <> 'cancelled'
                        AND d.source = 'customer') THEN 'limit_reached'
           END AS reason
      FROM rewards w CROSS JOIN me
      LEFT JOIN unnest(CAST(:tier_names AS text[]), CAST(:tier_thresholds AS bigint[])) AS tier(name, threshold)
        ON tier.name = w.min_tier
     WHERE w.active
       AND (CAST(:after_cost AS bigint) IS NULL OR (w.cost_points, w.id) > (:after_cost, :after_id))
)
SELECT * FROM seen
 WHERE (CAST(:affordable AS boolean) IS NULL OR (seen.cost_points <= seen.balance) = :affordable)
   AND (CAST(:available AS boolean) IS NULL OR (seen.reason IS NULL) = :available)
 ORDER BY seen.cost_points, seen.id LIMIT :limit
"""


async def customer_view(
    session: AsyncSession,
    customer_id: str,
    tiers: Sequence[tuple[str, int]],
    affordable: bool | None,
    available: bool | None,
    after: tuple[int, uuid.UUID] | None,
    limit: int,
) -> list[OfferedReward]:
    rows = (
        await session.execute(
            text(_CUSTOMER_VIEW),
            {
                "c": customer_id,
                "at": None,
                "tier_names": [name for name, _ in tiers],
                "tier_thresholds": [threshold for _, threshold in tiers],
                "affordable": affordable,
                "available": available,
                "after_cost": after[0] if after else None,
                "after_id": after[1] if after else None,
                "limit": limit,
            },
        )
    ).all()
    return [OfferedReward(Reward.model_validate(row, from_attributes=True), row.balance, row.reason) for row in rows]


# --- redemptions ---


async def get_redemption(session: AsyncSession, redemption_id: uuid.UUID) -> RewardRedemption | None:
    row = (
        await session.execute(
            text(f"SELECT {REDEMPTION_COLUMNS} FROM reward_redemptions d JOIN rewards w ON w.id = d.reward_id "
                 "WHERE d.id = :id"),
            {"id": redemption_id},
        )
    ).first()  # fmt: skip
    return None if row is None else RewardRedemption.model_validate(row, from_attributes=True)


async def list_redemptions(
    session: AsyncSession, customer_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[RewardRedemption]:
    """Newest first."""
    rows = (
        await session.execute(
            text(
                f"""
                SELECT {REDEMPTION_COLUMNS} FROM reward_redemptions d JOIN rewards w ON w.id = d.reward_id
                 WHERE d.customer_id = :c
                   AND (CAST(:after_at AS timestamptz) IS NULL OR (d.created_at, d.id) < (:after_at, :after_id))
                 ORDER BY d.created_at DESC, d.id DESC LIMIT :limit
                """
            ),
            {
                "c": customer_id,
                "after_at": after[0] if after else None,
                "after_id": after[1] if after else None,
                "limit": limit,
            },
        )
    ).all()
    return [RewardRedemption.model_validate(row, from_attributes=True) for row in rows]


async def list_pending(
    session: AsyncSession, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[RewardRedemption]:
    """Every customer's redemptions waiting to be handed over, newest first (index
    ix_reward_redemptions_pending: the page is read in order, however many have been fulfilled)."""
    rows = (
        await session.execute(
            text(
                f"""
                SELECT {REDEMPTION_COLUMNS} FROM reward_redemptions d JOIN rewards w ON w.id = d.reward_id
                 WHERE d.status = 'pending'
                   AND (CAST(:after_at AS timestamptz) IS NULL OR (d.created_at, d.id) < (:after_at, :after_id))
                 ORDER BY d.created_at DESC, d.id DESC LIMIT :limit
                """
            ),
            {"after_at": after[0] if after else None, "after_id": after[1] if after else None, "limit": limit},
        )
    ).all()
    return [RewardRedemption.model_validate(row, from_attributes=True) for row in rows]


async def fulfil(session: AsyncSession, redemption_id: uuid.UUID) -> bool:
    """Mark a pending item handed over; False when it was not pending."""
    done = (
        await session.execute(
            text(
                "UPDATE reward_redemptions SET status = 'fulfilled', fulfilled_at = now() "
                "WHERE id = :id AND status = 'pending' RETURNING id"
            ),
            {"id": redemption_id},
        )
    ).first()
    return done is not None


async def pending_totals(session: AsyncSession) -> tuple[int, int]:
    row = (
        await session.execute(
            text(
                "SELECT coalesce(sum(points), 0) AS points, count(*) AS n FROM reward_redemptions "
                "WHERE status IN ('issuing', 'pending')"
            )
        )
    ).one()
    return int(row.points), int(row.n)
