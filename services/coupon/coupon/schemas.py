"""Request and response bodies of the coupon API."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints, model_validator

from coupon.code_format import Charset
from kit.types import Currency, Identifier, Money, StrictModel, check_money

DiscountType = Literal["percent", "fixed_amount"]
Category = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_CODES_PER_CALL = 1_000_000


class DiscountIn(StrictModel):
    type: DiscountType
    value: Money
    currency: Currency | None = None
    max_discount: Money | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DiscountIn:
        if self.type == "percent":
            if self.value > 100:
                raise ValueError("a percent discount is at most 100")
            if -self.value.normalize().as_tuple().exponent > 2:  # type: ignore[operator]
                raise ValueError("a percent discount has at most 2 decimals")
        if self.type == "fixed_amount" and self.currency is None:
            raise ValueError("a fixed_amount discount needs a currency")
        if self.max_discount is not None:
            if self.type != "percent":
                raise ValueError("max_discount applies to percent discounts")
            if self.currency is None:
                raise ValueError("max_discount needs a currency")
            check_money(self.max_discount, self.currency)
        if self.type == "fixed_amount" and self.currency:
            check_money(self.value, self.currency)
        return self


class CodeFormatIn(StrictModel):
    prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{0,16}$")] = Field(
        default="", description="Letters, digits and dashes; stored upper-case without dashes."
    )
    length: int = Field(
        default=12, ge=6, le=32, strict=True, description="Characters after the prefix, the check character included."
    )
    charset: Charset = "unambiguous"


class LimitsIn(StrictModel):
    per_code: int = Field(default=1, ge=1, le=1_000_000, strict=True)
    per_customer: int = Field(default=1, ge=1, le=1_000_000, strict=True)
    total: int | None = Field(default=None, ge=1, lt=2**31, strict=True)


class CampaignCreate(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    discount: DiscountIn
    code: CodeFormatIn = Field(default_factory=CodeFormatIn)
    limits: LimitsIn = Field(default_factory=LimitsIn)
    min_order_total: Money | None = None
    categories: list[Category] = Field(default_factory=list, max_length=100)
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CampaignCreate:
        if self.min_order_total is not None:
            if self.discount.currency is None:
                raise ValueError("min_order_total needs discount.currency")
            check_money(self.min_order_total, self.discount.currency)
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self

    @property
    def normalized_prefix(self) -> str:
        return re.sub("-", "", self.code.prefix).upper()


class CampaignPatch(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    active: bool | None = None
    valid_until: AwareDatetime | None = Field(default=None, description="Extend (or shorten) the validity window.")


class DiscountOut(BaseModel):
    type: DiscountType
    value: Decimal
    currency: str | None
    max_discount: Decimal | None


class CodeFormatOut(BaseModel):
    prefix: str
    length: int
    charset: Charset


class LimitsOut(BaseModel):
    per_code: int
    per_customer: int
    total: int | None


class CampaignStats(BaseModel):
    generated: int = Field(description="Codes stored (generated in bulk or made at issuance).")
    issued: int = Field(description="Codes assigned to a customer.")
    redeemed: int = Field(description="Redemptions standing (not rolled back).")
    rolled_back: int = Field(description="Redemptions given back.")


class CodeJob(BaseModel):
    id: uuid.UUID
    campaign_id: uuid.UUID
    status: Literal["pending", "running", "succeeded", "failed"]
    requested: int
    generated: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class Campaign(BaseModel):
    id: uuid.UUID
    name: str
    discount: DiscountOut
    code: CodeFormatOut
    limits: LimitsOut
    min_order_total: Decimal | None
    categories: list[str]
    valid_from: datetime | None
    valid_until: datetime | None
    active: bool
    created_at: datetime
    updated_at: datetime
    stats: CampaignStats
    generation: CodeJob | None = Field(description="The latest bulk code generation and its progress.")


class CodesRequest(StrictModel):
    count: int = Field(ge=1, le=MAX_CODES_PER_CALL, strict=True)


class CouponCode(BaseModel):
    code: str
    customer_id: str | None
    uses: int
    issued_at: datetime | None


class IssuanceRequest(StrictModel):
    customer_id: Identifier


class Issuance(BaseModel):
    code: str
    campaign_id: uuid.UUID
    customer_id: str
    discount: DiscountOut
    valid_from: datetime | None
    valid_until: datetime | None


class WalletCoupon(BaseModel):
    code: str
    campaign_id: uuid.UUID
    campaign_name: str
    discount: DiscountOut
    status: Literal["active", "redeemed", "expired"]
    uses: int
    uses_left: int
    valid_from: datetime | None
    valid_until: datetime | None
    issued_at: datetime


class OrderIn(StrictModel):
    customer_id: Identifier
    order_total: Money
    currency: Currency
    categories: list[Category] | None = Field(
        default=None, max_length=100, description="The order's categories; checked against the campaign's."
    )

    @model_validator(mode="after")
    def _money(self) -> OrderIn:
        check_money(self.order_total, self.currency)
        return self


class ValidationRequest(OrderIn):
    pass


class ValidationResult(BaseModel):
    valid: bool
    discount_amount: Decimal | None
    reason: str | None = Field(
        description="Why not: inactive, not_yet_valid, expired, assigned_to_another_customer, currency_mismatch, "
        "minimum_not_met, category_mismatch, coupon_exhausted, customer_limit_reached."
    )


class RedemptionRequest(OrderIn):
    order_id: Identifier


class Redemption(BaseModel):
    redemption_id: uuid.UUID
    discount_amount: Decimal
    currency: str
    code: str
    campaign_id: uuid.UUID
    customer_id: str
    order_id: str
    status: Literal["redeemed", "rolled_back"]
    created_at: datetime
    rolled_back_at: datetime | None


class NthPurchaseTrigger(StrictModel):
    type: Literal["nth_purchase"]
    n: int = Field(ge=1, le=1_000_000, strict=True)


class OrderTotalTrigger(StrictModel):
    type: Literal["order_total_at_least"]
    amount: Money
    currency: Currency

    @model_validator(mode="after")
    def _money(self) -> OrderTotalTrigger:
        check_money(self.amount, self.currency)
        return self


class SurveyDetractorTrigger(StrictModel):
    type: Literal["survey_detractor"]


Trigger = Annotated[NthPurchaseTrigger | OrderTotalTrigger | SurveyDetractorTrigger, Field(discriminator="type")]


class RuleCreate(StrictModel):
    campaign_id: uuid.UUID | None = Field(default=None, description="The campaign whose coupon the rule issues.")
    reward_id: uuid.UUID | None = Field(
        default=None, description="Or a gift: the catalogue reward (points service) the rule grants at no cost."
    )
    trigger: Trigger

    @model_validator(mode="after")
    def _grants_one(self) -> RuleCreate:
        if (self.campaign_id is None) == (self.reward_id is None):
            raise ValueError("give exactly one of campaign_id or reward_id")
        return self


class RulePatch(StrictModel):
    active: bool


class Rule(BaseModel):
    id: uuid.UUID
    campaign_id: uuid.UUID | None
    reward_id: uuid.UUID | None = None
    trigger: Trigger
    active: bool
    created_at: datetime


class ImportedCodeLine(StrictModel):
    """One line of `POST /v1/coupon-campaigns/{id}/codes:import`: a code printed by another programme."""

    code: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{4,64}$")]
    customer_id: Identifier | None = None
    redeemed: Annotated[int, Field(ge=0, le=1_000_000)] = 0


class RewardIssuanceRequest(StrictModel):
    """From the points service: a code for a reward redemption, keyed by the redemption id."""

    key: uuid.UUID
    campaign_id: uuid.UUID
    customer_id: Identifier


class RewardIssuance(BaseModel):
    status: Literal["issued", "voided", "refused"]
    code: str | None
    reason: str | None
