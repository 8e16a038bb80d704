"""The events the platform's processes send each other: one model per event type, the one shape of its payload.

A producer builds the model and hands it to :func:`kit.events.publish`; the consumer's event router parses the
payload into the same model once, refuses it there when it does not fit (parked, never retried), and hands the
handler an `Event[Model]`. The envelope, not the payload, carries what every event has: its id, the business
time of what it describes (`occurred_at`: a purchase's own time, a response's submission), the time it was
published, and the request id that caused it.

Payloads ignore members they do not know, so a producer may add a field before its consumers read it.
`docs/architecture.md`'s event catalogue is generated from these models (`python -m scripts.event_catalogue`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from typing_extensions import TypedDict

from kit.types import Currency, Email, Identifier, Money, Points, check_money

__all__ = [
    "CONTRACTS",
    "Contract",
    "ExperimentReward",
    "GiftGranted",
    "PurchaseCreated",
    "PurchaseItem",
    "PurchaseRefunded",
    "SurveyDetractor",
    "SurveyInvited",
    "SurveyPreference",
    "SurveyResponded",
]


class Contract(BaseModel):
    """The payload of one event type: `type`, who publishes it and who consumes it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: ClassVar[str]
    producer: ClassVar[str]
    consumers: ClassVar[tuple[str, ...]]


Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Category = Annotated[str, StringConstraints(min_length=1, max_length=100)]


# A TypedDict, not a model: a purchase carries about twenty items, each consumer parses every purchase, and
# validating items into dicts costs a third of building a model for each (docs/benchmarks.md, "History import").
class PurchaseItem(TypedDict):
    product_id: Identifier
    name: Name
    category: Category
    unit_price: Money
    quantity: Annotated[int, Field(ge=1, le=1_000_000, strict=True)]


class PurchaseCreated(Contract):
    """A purchase the gateway accepted (`POST /v1/purchases` or an import); business time: its `occurred_at`.
    Points earn by the rules; coupon's surprise rules fire; recommend records interactions; survey invites the
    buyer after a delay (recent purchases only)."""

    type: ClassVar[str] = "purchase.created"
    producer: ClassVar[str] = "gateway"
    consumers: ClassVar[tuple[str, ...]] = ("points", "coupon", "recommend", "survey")

    purchase_id: Identifier
    customer_id: Identifier
    email: Email | None = None
    currency: Currency
    total: Money
    items: Annotated[list[PurchaseItem], Field(min_length=1, max_length=1000)]

    @model_validator(mode="after")
    def _money_fits_the_currency(self) -> PurchaseCreated:
        check_money(self.total, self.currency)
        for item in self.items:
            check_money(item["unit_price"], self.currency)
        return self


class PurchaseRefunded(Contract):
    """A refund the gateway accepted (`amount` null: the whole purchase). Points reverse what the purchase earned
    (pro rata); recommend never offers the refunded products back to the customer."""

    type: ClassVar[str] = "purchase.refunded"
    producer: ClassVar[str] = "gateway"
    consumers: ClassVar[tuple[str, ...]] = ("points", "recommend")

    purchase_id: Identifier
    refund_id: Identifier
    customer_id: Identifier
    amount: Money | None = None
    total: Money
    currency: Currency


class _SurveyAnswer(Contract):
    producer: ClassVar[str] = "survey"

    response_id: uuid.UUID
    invitation_id: uuid.UUID
    survey_id: uuid.UUID
    customer_id: Identifier


class SurveyResponded(_SurveyAnswer):
    """A survey answered through an invitation that carries a reward; business time: the submission. Points
    credit the reward, once."""

    type: ClassVar[str] = "survey.responded"
    consumers: ClassVar[tuple[str, ...]] = ("points",)

    reward_points: Points


class SurveyDetractor(_SurveyAnswer):
    """An answer whose lowest NPS score is 6 or less (`purchase_id`: the purchase the invitation followed).
    Coupon's `survey_detractor` rules send an apology coupon; recommend weighs that purchase's products less."""

    type: ClassVar[str] = "survey.detractor"
    consumers: ClassVar[tuple[str, ...]] = ("coupon", "recommend")

    score: Annotated[int, Field(ge=0, le=10)]
    purchase_id: Identifier | None = None


class SurveyPreference(_SurveyAnswer):
    """The categories of the options a customer chose on preference questions; recommend adds them to the
    customer's preferences."""

    type: ClassVar[str] = "survey.preference"
    consumers: ClassVar[tuple[str, ...]] = ("recommend",)

    categories: Annotated[list[Category], Field(min_length=1, max_length=1000)]


class GiftGranted(Contract):
    """A surprise rule granted a catalogue item at no cost (once per `grant_id`, also the event id); points
    grant it ([rewards.md](rewards.md)) and report its cost to `experiment_id`, when there is one."""

    type: ClassVar[str] = "reward.gift_granted"
    producer: ClassVar[str] = "coupon"
    consumers: ClassVar[tuple[str, ...]] = ("points",)

    grant_id: uuid.UUID
    rule_id: uuid.UUID
    reward_id: uuid.UUID
    customer_id: Identifier
    experiment_id: uuid.UUID | None = None


class ExperimentReward(Contract):
    """A lever gave or withheld a reward under an experiment, or a reward's cost became known (a negative
    `money` gives a cost back); the gateway records the exposure and its cost, recomputing the arm
    ([experiments.md](experiments.md))."""

    type: ClassVar[str] = "experiment.reward"
    producer: ClassVar[str] = "points, coupon, survey"
    consumers: ClassVar[tuple[str, ...]] = ("gateway",)

    experiment_id: uuid.UUID
    customer_id: Identifier
    key: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    arm: str | None = None
    exposes: bool
    withheld: bool
    points: int | None = None
    money: Decimal | None = None
    currency: Currency | None = None


class SurveyInvited(Contract):
    """A customer was invited to a survey: the gateway's overview shows the invitation from `send_at` (when the
    invitation falls due) until `expires_at` (gateway/overview.py). Business time: when it was made."""

    type: ClassVar[str] = "survey.invited"
    producer: ClassVar[str] = "survey"
    consumers: ClassVar[tuple[str, ...]] = ("gateway",)

    invitation_id: uuid.UUID
    survey_id: uuid.UUID
    customer_id: Identifier
    send_at: datetime
    expires_at: datetime


CONTRACTS: dict[str, type[Contract]] = {
    model.type: model
    for model in (
        PurchaseCreated,
        PurchaseRefunded,
        SurveyResponded,
        SurveyDetractor,
        SurveyPreference,
        GiftGranted,
        ExperimentReward,
        SurveyInvited,
    )
}
