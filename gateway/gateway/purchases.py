"""Purchases and refunds: stored with their events in one transaction, then delivered by the outbox relay.

A purchase is idempotent by `purchase_id`: the same body (compared after validation, so formatting does not
matter) answers as the first did; another body is 409 `purchase_conflict`. Concurrent sends of one purchase
serialise on the primary key: the second insert waits for the first to commit, then finds it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.schemas import PurchaseCreate, RefundCreate
from gateway.tables import purchases, refunds
from gateway.webhooks import domain as webhooks
from kit.errors import Conflict, FieldError, NotFound, Unprocessable, ValidationFailed
from kit.events import delivery_states, publish
from kit.json import dumps
from kit.types import check_money
from kit.webhooks import PurchaseAccepted, PurchaseRefunded

__all__ = ["PURCHASE_CONSUMERS", "REFUND_CONSUMERS", "accept_purchase", "accept_refund", "get_purchase"]

PURCHASE_CONSUMERS = ("points", "coupon", "recommend", "survey")
REFUND_CONSUMERS = ("points",)


def _fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(dumps(body)).hexdigest()


async def accept_purchase(session: AsyncSession, purchase: PurchaseCreate) -> None:
    body = purchase.model_dump(mode="json")
    fingerprint = _fingerprint(body)
    # The event id is chosen before the insert so the purchase row can name it; publishing only if we won.
    inserted = await session.scalar(
        insert(purchases)
        .values(
            purchase_id=purchase.purchase_id,
            customer_id=purchase.customer_id,
            body_hash=fingerprint,
            body=body,
            event_id=func.gen_random_uuid(),
        )
        .on_conflict_do_nothing(index_elements=["purchase_id"])
        .returning(purchases.c.event_id)
    )
    if inserted is None:
        existing = await session.scalar(
            select(purchases.c.body_hash).where(purchases.c.purchase_id == purchase.purchase_id)
        )
        if existing != fingerprint:
            raise Conflict(
                "A purchase with this purchase_id was already accepted with different contents.",
                code="purchase_conflict",
            )
        return
    await publish(session, "purchase.created", body, PURCHASE_CONSUMERS, event_id=inserted)
    purchase_view = {k: v for k, v in body.items() if k != "email"}
    await webhooks.enqueue(
        session,
        inserted,
        PurchaseAccepted.type,
        {"customer_id": purchase.customer_id, "purchase": purchase_view},
        datetime.now(UTC),
    )


async def get_purchase(session: AsyncSession, purchase_id: str) -> dict[str, Any]:
    row = (await session.execute(select(purchases).where(purchases.c.purchase_id == purchase_id))).first()
    if row is None:
        raise NotFound("No purchase with this id.")
    refund_rows = (
        await session.execute(
            select(refunds).where(refunds.c.purchase_id == purchase_id).order_by(refunds.c.created_at)
        )
    ).all()
    return {
        "purchase_id": row.purchase_id,
        "customer_id": row.customer_id,
        "total": Decimal(row.body["total"]),
        "currency": row.body["currency"],
        "occurred_at": row.body["occurred_at"],
        "deliveries": await delivery_states(session, row.event_id),
        "refunds": [
            {"refund_id": r.refund_id, "amount": r.amount, "deliveries": await delivery_states(session, r.event_id)}
            for r in refund_rows
        ],
    }


async def accept_refund(session: AsyncSession, purchase_id: str, refund: RefundCreate) -> dict[str, Any]:
    """Refunds of one purchase never add up to more than its total: the purchase row is locked while checking."""
    purchase = (
        await session.execute(select(purchases).where(purchases.c.purchase_id == purchase_id).with_for_update())
    ).first()
    if purchase is None:
        raise NotFound("No purchase with this id.")
    total = Decimal(purchase.body["total"])
    if refund.amount is not None:
        try:
            check_money(refund.amount, purchase.body["currency"])
        except ValueError as exc:
            # checked here, not left to the points service: a refund it refused would be parked, and the
            # purchase's points could never be reversed again
            raise ValidationFailed([FieldError("amount", str(exc))]) from None
    existing = (await session.execute(select(refunds).where(refunds.c.refund_id == refund.refund_id))).first()
    if existing is not None:
        same = existing.purchase_id == purchase_id and (
            existing.full_refund if refund.amount is None else existing.amount == refund.amount
        )
        if not same:
            raise Conflict("This refund_id was already used for another refund.", code="refund_conflict")
        return {"refund_id": existing.refund_id, "purchase_id": purchase_id, "amount": existing.amount}
    refunded = await session.scalar(
        select(func.coalesce(func.sum(refunds.c.amount), 0)).where(refunds.c.purchase_id == purchase_id)
    )
    remaining = total - Decimal(refunded or 0)
    amount = remaining if refund.amount is None else refund.amount
    if amount <= 0 or amount > remaining:
        raise Unprocessable(
            f"Only {remaining} {purchase.body['currency']} of this purchase is left to refund.",
            code="refund_exceeds_total",
            remaining=str(remaining),
        )
    payload = {
        "purchase_id": purchase_id,
        "refund_id": refund.refund_id,
        "customer_id": purchase.customer_id,
        "amount": None if amount == total else str(amount),
        "total": str(total),
        "currency": purchase.body["currency"],
    }
    event_id = await publish(session, "purchase.refunded", payload, REFUND_CONSUMERS)
    refund_view = {
        "refund_id": refund.refund_id,
        "purchase_id": purchase_id,
        "amount": str(amount),
        "currency": purchase.body["currency"],
        "full_refund": amount == total,
    }
    await webhooks.enqueue(
        session,
        event_id,
        PurchaseRefunded.type,
        {"customer_id": purchase.customer_id, "refund": refund_view},
        datetime.now(UTC),
    )
    await session.execute(
        insert(refunds).values(
            refund_id=refund.refund_id,
            purchase_id=purchase_id,
            amount=amount,
            full_refund=refund.amount is None,
            event_id=event_id,
        )
    )
    return {"refund_id": refund.refund_id, "purchase_id": purchase_id, "amount": amount}
