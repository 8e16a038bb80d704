"""Request and response bodies of the points API."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, PlainSerializer, StringConstraints, model_validator

from kit.types import MAX_POINTS, Identifier, Money, Points, StrictModel

Description = Annotated[str, StringConstraints(max_length=500)]
Category = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a time zone (RFC 3339)")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
# Factors are exact decimals (so 1.1 x 10 is 11, not 11.000000000000002), written and read as JSON numbers.
Factor = Annotated[
    Decimal,
    Field(ge=0, le=1000, max_digits=12, decimal_places=4),
    PlainSerializer(float, return_type=float, when_used="json"),
]
PositiveFactor = Annotated[
    Decimal,
    Field(gt=0, le=1000, max_digits=12, decimal_places=4),
    PlainSerializer(float, return_type=float, when_used="json"),
]
RewardKind = Literal["item", "coupon"]
RedemptionStatus = Literal["issuing", "pending", "fulfilled", "cancelled"]
TransactionType = Literal["earn", "redeem", "expire", "reverse", "adjust", "cancel"]


class PointsChange(StrictModel):
    points: Points
    reference: Identifier
    description: Description | None = None


class EarnRequest(PointsChange):
    """An explicit earn (partner or admin); purchases earn through the rules."""


class RedemptionRequest(PointsChange):
    pass


class AdjustmentRequest(StrictModel):
    """A manual correction: positive adds a lot (and repays a negative balance first), negative takes points
    away and may leave the balance below zero."""

    points: Annotated[int, Field(gt=-MAX_POINTS, lt=MAX_POINTS, strict=True)]
    reference: Identifier
    description: Description | None = None

    @model_validator(mode="after")
    def _not_zero(self) -> AdjustmentRequest:
        if self.points == 0:
            raise ValueError("points must not be zero")
        return self


class ReversalRequest(StrictModel):
    purchase_reference: Identifier
    refund_reference: Identifier
    amount: Money | None = Field(default=None, description="Refunded amount in the purchase's currency; null = full.")


class PointsResult(BaseModel):
    transaction_id: int
    points: int
    balance: int


class ReversalResult(BaseModel):
    purchase_reference: str
    refund_reference: str
    transaction_id: int | None
    points: int
    balance: int


class NextTier(BaseModel):
    name: str
    points_needed: int


class Expiring(BaseModel):
    points: int
    expires_at: datetime


class Balance(BaseModel):
    customer_id: str
    balance: int
    tier: str | None
    qualifying_points: int
    next_tier: NextTier | None
    expiring: list[Expiring]


class TransactionReward(BaseModel):
    """The reward redemption a ledger entry belongs to (its redemption, or the cancellation that undid it)."""

    redemption_id: uuid.UUID
    reward_id: uuid.UUID
    name: str
    status: RedemptionStatus


class Transaction(BaseModel):
    id: int
    type: TransactionType
    points: int
    balance_after: int
    reference: str
    description: str
    created_at: datetime
    reward: TransactionReward | None = None


class BonusCampaign(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    multiplier: PositiveFactor | None = None
    bonus_points: Points | None = None
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    categories: list[Category] | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _check(self) -> BonusCampaign:
        if (self.multiplier is None) == (self.bonus_points is None):
            raise ValueError("give exactly one of multiplier or bonus_points")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self

    def applies(self, at: datetime, category: str | None) -> bool:
        if not self.starts_at <= at < self.ends_at:
            return False
        return self.categories is None or (category is not None and category in self.categories)


class EarningRules(StrictModel):
    points_per_currency_unit: Factor = Decimal(1)
    category_multipliers: dict[Category, Factor] = Field(default_factory=dict, max_length=1000)
    bonus_campaigns: list[BonusCampaign] = Field(default_factory=list, max_length=100)
    expires_after_days: Annotated[int, Field(ge=1, le=36500)] | None = 365


class Tier(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    threshold: Annotated[int, Field(ge=0, lt=MAX_POINTS, strict=True)]
    earn_multiplier: PositiveFactor = Decimal(1)


class ExpiryRun(BaseModel):
    accounts: int
    lots_expired: int
    points_expired: int
    ran_at: datetime


class LiabilityMonth(BaseModel):
    month: str | None = Field(description="YYYY-MM of the expiry; null for points that never expire.")
    points: int


class Liability(BaseModel):
    total_points: int = Field(description="Points customers hold and could still spend (open lots).")
    negative_balance_points: int = Field(description="Points owed by accounts below zero (not netted above).")
    accounts_with_points: int
    by_expiry_month: list[LiabilityMonth]
    pending_reward_points: int = Field(
        default=0,
        description="Points spent on rewards not handed over yet (pending items, coupons being issued): owed as "
        "goods, not as points, so not in total_points; a cancellation would bring them back.",
    )
    pending_reward_redemptions: int = 0


class AuditMismatch(BaseModel):
    customer_id: str
    balance: int | None
    ledger_sum: int
    last_balance_after: int | None
    lots_remaining: int
    broken_chain_links: int


class Audit(BaseModel):
    accounts_checked: int
    mismatches: list[AuditMismatch]


class OpeningBalance(StrictModel):
    """One line of `POST /v1/points/balances:import`: a member's standing brought over from another programme.

    Fields are lax (CSV cells arrive as text): "120" is 120 points."""

    customer_id: Identifier
    points: Annotated[int, Field(gt=0, lt=MAX_POINTS)]
    reference: Identifier
    expires_at: datetime | None = None
    qualifying_points: Annotated[int, Field(ge=0, lt=MAX_POINTS)] | None = None
    description: Description | None = None


# --- the rewards catalogue ---

ImageUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]{1,1990}$", max_length=2000)]
RewardName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
RewardDescription = Annotated[str, StringConstraints(max_length=2000)]
TierName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Stock = Annotated[int, Field(ge=0, lt=2**31, strict=True)]
Limit = Annotated[int, Field(ge=1, lt=2**31, strict=True)]


class RewardCreate(StrictModel):
    name: RewardName
    description: RewardDescription = ""
    kind: RewardKind
    cost_points: Points
    campaign_id: uuid.UUID | None = Field(default=None, description="The coupon campaign (kind coupon only).")
    stock: Stock | None = Field(default=None, description="Units available; null: unlimited.")
    per_customer_limit: Limit | None = None
    min_tier: TierName | None = None
    active: bool = True
    image_url: ImageUrl | None = None

    @model_validator(mode="after")
    def _campaign(self) -> RewardCreate:
        if (self.kind == "coupon") != (self.campaign_id is not None):
            raise ValueError("campaign_id is required for a coupon reward and not allowed for an item")
        return self


class RewardPatch(StrictModel):
    name: RewardName | None = None
    description: RewardDescription | None = None
    cost_points: Points | None = None
    campaign_id: uuid.UUID | None = None
    stock: Stock | None = Field(default=None, description="The new total; null: unlimited.")
    per_customer_limit: Limit | None = None
    min_tier: TierName | None = None
    active: bool | None = None
    image_url: ImageUrl | None = None


class Reward(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    kind: RewardKind
    cost_points: int
    campaign_id: uuid.UUID | None
    stock: int | None
    stock_left: int | None = Field(description="Units left; null: unlimited.")
    per_customer_limit: int | None
    min_tier: str | None
    active: bool
    image_url: str | None
    created_at: datetime
    updated_at: datetime


UnavailableReason = Literal["out_of_stock", "limit_reached", "tier_too_low"]


class CustomerReward(Reward):
    affordable: bool
    points_needed: int = Field(description="Points still missing; 0 when affordable.")
    available: bool
    reason: UnavailableReason | None = None


class RewardRedemptionRequest(StrictModel):
    reward_id: uuid.UUID
    reference: Identifier


class RewardRedemptionResult(BaseModel):
    redemption_id: uuid.UUID
    reward_id: uuid.UUID
    points: int
    balance: int = Field(description="The balance right after the redemption.")
    status: RedemptionStatus
    coupon_code: str | None = None


class RewardRedemption(BaseModel):
    redemption_id: uuid.UUID
    reward_id: uuid.UUID
    reward_name: str
    kind: RewardKind
    customer_id: str
    reference: str
    source: Literal["customer", "gift"]
    points: int
    status: RedemptionStatus
    coupon_code: str | None
    cancel_reason: str | None
    created_at: datetime
    fulfilled_at: datetime | None
    cancelled_at: datetime | None
