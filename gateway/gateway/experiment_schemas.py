"""The experiments API's bodies (CONTRACT.md, "Experiments: does giving first work?")."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints, model_validator

from kit.experiments import Arm, LeverType
from kit.types import StrictModel

ExperimentStatus = Literal["running", "stopped", "ended"]


class Lever(StrictModel):
    type: LeverType
    id: Annotated[
        str,
        StringConstraints(min_length=1, max_length=100),
        Field(description="A coupon rule's id, a bonus campaign's name, a survey's id, a gift rule's id."),
    ]


class ExperimentCreate(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    lever: Lever
    holdout_percent: Annotated[int, Field(ge=1, le=90, strict=True)]
    starts_at: AwareDatetime | None = Field(
        default=None,
        description="Default now. Compared with the business time of what fires the lever (a purchase's "
        "`occurred_at`), so an experiment may cover a replayed history.",
    )
    ends_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _order(self) -> ExperimentCreate:
        if self.starts_at is not None and self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class Experiment(BaseModel):
    id: UUID
    name: str
    lever: Lever
    holdout_percent: int
    starts_at: datetime
    ends_at: datetime | None
    stopped_at: datetime | None
    status: ExperimentStatus
    created_at: datetime


class Assignment(BaseModel):
    experiment_id: UUID
    customer_id: str
    arm: Arm


class ArmResult(BaseModel):
    customers_exposed: int
    customers_returned: int
    repeat_rate: float
    purchases: int
    revenue: Decimal
    revenue_per_customer: Decimal
    reward_cost_points: int = Field(description="Points the lever gave in this arm (0 in the holdout).")
    reward_cost_money: Decimal = Field(description="Discounts redeemed with coupons the lever gave in this arm.")
    rewards_given: int
    rewards_withheld: int


class LiftResult(BaseModel):
    absolute: float = Field(description="Treatment minus holdout.")
    relative: float | None = Field(description="`absolute` divided by the holdout's value; null when that is 0.")
    ci95: tuple[float, float]
    p_value: float | None
    significant: bool = Field(description="p_value below 0.05.")
    method: str


class Lifts(BaseModel):
    repeat_rate: LiftResult | None
    revenue_per_customer: LiftResult | None


class CostPerExtraCustomer(BaseModel):
    extra_returning_customers: float = Field(
        description="(treatment repeat rate - holdout repeat rate) x customers exposed in the treatment."
    )
    points: float | None = Field(description="Points given per extra returning customer; null without a lift.")
    money: Decimal | None = Field(description="Discount given per extra returning customer; null without a lift.")


class Results(BaseModel):
    experiment_id: UUID
    status: ExperimentStatus
    window_days: int
    arms: dict[Arm, ArmResult]
    lift: Lifts
    cost_per_extra_returning_customer: CostPerExtraCustomer
    conclusion: str
