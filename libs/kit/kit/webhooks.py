"""Webhook events for partner systems: one model per event type of the public contract, and how a service
publishes one.

A service calls :func:`publish_webhook` inside the transaction that made the change: the event goes into the
service's own outbox, addressed to the gateway (consumer :data:`WEBHOOK_CONSUMER`), so it exists exactly when
the change committed; a rolled-back transaction sends nothing. The gateway receives it on its internal events
route and fans it out to the partner endpoints subscribed to its type, signed (see `gateway.webhooks`).

The body a partner receives is `{"type", "timestamp", "data"}`; `data` is the model below: the customer's id
and the resource as the API shows it. `docs/webhooks.md` is generated from these models and their samples
(`python -m scripts.webhook_docs`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from kit.contracts import Contract
from kit.events import publish

__all__ = [
    "EVENT_MODELS",
    "EVENT_TYPES",
    "WEBHOOK_CONSUMER",
    "CouponIssued",
    "CouponRedeemed",
    "CouponRedemptionView",
    "CouponView",
    "EventType",
    "PointsEarned",
    "PointsExpired",
    "PointsRedeemed",
    "PointsReversed",
    "PurchaseAccepted",
    "PurchaseRefunded",
    "RewardRedeemed",
    "SurveyAnswered",
    "SurveyDetractor",
    "SurveyResponseView",
    "TierChanged",
    "WebhookEvent",
    "publish_webhook",
]

# The gateway is one consumer of a service's outbox, whatever it does with the events (webhooks, experiments).
WEBHOOK_CONSUMER = "gateway"

_SAMPLE_TIME = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


class _View(BaseModel):
    # Producers may add fields before the gateway knows them: they pass through, never refused.
    model_config = ConfigDict(extra="allow")


class WebhookEvent(_View, Contract):
    """The `data` of one event type. Every event names its customer."""

    model_config = ConfigDict(extra="allow", frozen=False)
    producer: ClassVar[str] = "the service that owns the resource"
    consumers: ClassVar[tuple[str, ...]] = (WEBHOOK_CONSUMER,)
    description: ClassVar[str]
    sample: ClassVar[dict[str, Any]]

    customer_id: str


# --- resources, as the API shows them ---


class PurchaseItemView(_View):
    product_id: str
    name: str
    category: str
    unit_price: Decimal
    quantity: int


class PurchaseView(_View):
    purchase_id: str
    customer_id: str
    occurred_at: datetime
    currency: str
    total: Decimal
    items: list[PurchaseItemView]


class RefundView(_View):
    refund_id: str
    purchase_id: str
    amount: Decimal
    currency: str
    full_refund: bool


class TransactionView(_View):
    id: int
    type: Literal["earn", "redeem", "expire", "reverse", "adjust"]
    points: int
    balance_after: int
    reference: str
    description: str
    created_at: datetime


class DiscountView(_View):
    type: Literal["percent", "fixed_amount"]
    value: Decimal
    currency: str | None = None
    max_discount: Decimal | None = None


class CouponView(_View):
    code: str
    campaign_id: uuid.UUID
    customer_id: str
    discount: DiscountView
    valid_from: datetime | None = None
    valid_until: datetime | None = None


class CouponRedemptionView(_View):
    redemption_id: uuid.UUID
    code: str
    campaign_id: uuid.UUID
    customer_id: str
    order_id: str
    discount_amount: Decimal
    currency: str
    created_at: datetime


class RewardRedemptionView(_View):
    redemption_id: uuid.UUID
    reward_id: uuid.UUID
    points: int
    balance: int
    status: Literal["pending", "fulfilled"]
    coupon_code: str | None = None


class AnswerView(_View):
    question_id: str
    value: Any


class SurveyResponseView(_View):
    response_id: uuid.UUID
    survey_id: uuid.UUID
    invitation_id: uuid.UUID
    answers: list[AnswerView]
    submitted_at: datetime


# --- the event types ---


def _transaction(type_: str, points: int, balance_after: int, reference: str, description: str) -> dict[str, Any]:
    """A points event's sample: the customer's transaction as `GET .../transactions` lists it."""
    transaction = {"id": 4711, "type": type_, "points": points, "balance_after": balance_after}
    transaction.update(reference=reference, description=description, created_at=_SAMPLE_TIME)
    return {"customer_id": "cust-1042", "transaction": transaction}


_CAMPAIGN = uuid.UUID("0b0cd3a1-7c1f-4f8e-9d5e-2f1c3a4b5c6d")


class PurchaseAccepted(WebhookEvent):
    type = "purchase.accepted"
    description = "A purchase was accepted (POST /v1/purchases); points, coupons and surveys follow from it."
    sample = {
        "customer_id": "cust-1042",
        "purchase": {
            "purchase_id": "order-20261203-0042",
            "customer_id": "cust-1042",
            "occurred_at": _SAMPLE_TIME,
            "currency": "EUR",
            "total": "59.80",
            "items": [
                {"product_id": "sku-77", "name": "Tea pot", "category": "kitchen", "unit_price": "29.90", "quantity": 2}
            ],
        },
    }
    purchase: PurchaseView


class PurchaseRefunded(WebhookEvent):
    type = "purchase.refunded"
    description = "A purchase was refunded, in full or in part; the points it earned are reversed pro rata."
    sample = {
        "customer_id": "cust-1042",
        "refund": {
            "refund_id": "refund-0042-1",
            "purchase_id": "order-20261203-0042",
            "amount": "29.90",
            "currency": "EUR",
            "full_refund": False,
        },
    }
    refund: RefundView


class PointsEarned(WebhookEvent):
    type = "points.earned"
    description = (
        "Points were earned: by a purchase, a survey reward or a partner's earn call (adjustments and imported "
        "opening balances send no event)."
    )
    sample = _transaction("earn", 120, 1370, "order-20261203-0042", "Purchase order-20261203-0042")
    transaction: TransactionView


class PointsRedeemed(WebhookEvent):
    type = "points.redeemed"
    description = "Points were spent (a redemption, or a reward from the catalogue)."
    sample = _transaction("redeem", -500, 870, "checkout-981", "Redeemed at checkout")
    transaction: TransactionView


class PointsReversed(WebhookEvent):
    type = "points.reversed"
    description = "Points a purchase earned were taken back because it was refunded (or a partner reversed them)."
    sample = _transaction("reverse", -60, 1310, "refund-0042-1", "Refund refund-0042-1 of purchase order-20261203-0042")
    transaction: TransactionView


class PointsExpired(WebhookEvent):
    type = "points.expired"
    description = "Points expired (one event per expired lot)."
    sample = _transaction("expire", -250, 1120, "expiry:2026-12-03", "Points expired")
    transaction: TransactionView


class TierChanged(WebhookEvent):
    type = "tier.changed"
    description = (
        "The customer's tier changed after a movement of qualifying points (an earning, or a reversal that took "
        "them back). `previous_tier` or `tier` is null below the lowest threshold."
    )
    sample = {"customer_id": "cust-1042", "previous_tier": "bronze", "tier": "silver", "qualifying_points": 1030}
    previous_tier: str | None
    tier: str | None
    qualifying_points: int


class CouponIssued(WebhookEvent):
    type = "coupon.issued"
    description = "A coupon code was assigned to a customer (an issuance, a surprise rule or a reward)."
    sample = {
        "customer_id": "cust-1042",
        "coupon": {
            "code": "WELCOME-7KQ2M9XR4TZP",
            "campaign_id": _CAMPAIGN,
            "customer_id": "cust-1042",
            "discount": {"type": "percent", "value": "10", "currency": None, "max_discount": None},
            "valid_from": None,
            "valid_until": datetime(2027, 1, 31, tzinfo=UTC),
        },
    }
    coupon: CouponView


class CouponRedeemed(WebhookEvent):
    type = "coupon.redeemed"
    description = "A coupon code was redeemed on an order."
    sample = {
        "customer_id": "cust-1042",
        "redemption": {
            "redemption_id": uuid.UUID("7d2f9a40-1b2c-4d3e-8f90-a1b2c3d4e5f6"),
            "code": "WELCOME-7KQ2M9XR4TZP",
            "campaign_id": _CAMPAIGN,
            "customer_id": "cust-1042",
            "order_id": "order-20261203-0042",
            "discount_amount": "5.98",
            "currency": "EUR",
            "created_at": _SAMPLE_TIME,
        },
    }
    redemption: CouponRedemptionView


class RewardRedeemed(WebhookEvent):
    type = "reward.redeemed"
    description = "Points bought a reward from the catalogue; an item waits for fulfilment (`pending`)."
    sample = {
        "customer_id": "cust-1042",
        "redemption": {
            "redemption_id": uuid.UUID("3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"),
            "reward_id": uuid.UUID("9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"),
            "points": 800,
            "balance": 570,
            "status": "pending",
            "coupon_code": None,
        },
    }
    redemption: RewardRedemptionView


class SurveyAnswered(WebhookEvent):
    type = "survey.answered"
    description = "A customer answered a survey invitation."
    sample = {
        "customer_id": "cust-1042",
        "response": {
            "response_id": uuid.UUID("5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"),
            "survey_id": uuid.UUID("1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"),
            "invitation_id": uuid.UUID("6c5b4a39-2817-4605-9f4e-3d2c1b0a9f8e"),
            "answers": [{"question_id": "nps", "value": 4}, {"question_id": "why", "value": "Late delivery"}],
            "submitted_at": _SAMPLE_TIME,
        },
    }
    response: SurveyResponseView


class SurveyDetractor(WebhookEvent):
    type = "survey.detractor"
    description = "A survey answer scored 0-6 on an NPS question: someone may want to call this customer."
    sample = {
        "customer_id": "cust-1042",
        "survey_id": uuid.UUID("1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"),
        "response_id": uuid.UUID("5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"),
        "score": 4,
    }
    survey_id: uuid.UUID
    response_id: uuid.UUID
    score: int


EVENT_MODELS: dict[str, type[WebhookEvent]] = {
    model.type: model
    for model in (
        PurchaseAccepted,
        PurchaseRefunded,
        PointsEarned,
        PointsRedeemed,
        PointsReversed,
        PointsExpired,
        TierChanged,
        CouponIssued,
        CouponRedeemed,
        RewardRedeemed,
        SurveyAnswered,
        SurveyDetractor,
    )
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_MODELS)
EventType = Literal[
    "purchase.accepted",
    "purchase.refunded",
    "points.earned",
    "points.redeemed",
    "points.reversed",
    "points.expired",
    "tier.changed",
    "coupon.issued",
    "coupon.redeemed",
    "reward.redeemed",
    "survey.answered",
    "survey.detractor",
]
assert set(get_args(EventType)) == set(EVENT_TYPES), "EventType and EVENT_MODELS must list the same types"


async def publish_webhook(session: AsyncSession, event: WebhookEvent) -> uuid.UUID:
    """Put a webhook event in this service's outbox, in the caller's transaction; the relay carries it to the
    gateway. The event id becomes the partner-visible `webhook-id`, so a redelivery is recognised."""
    return await publish(session, event)
