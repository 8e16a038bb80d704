"""Purchases and refunds: stored with their events in one transaction, then delivered by the outbox relay.

A purchase is idempotent by `purchase_id`: the same body (compared after validation, so formatting does not
matter) answers as the first did; another body is 409 `purchase_conflict`. Concurrent sends of one purchase
serialise on the primary key: the second insert waits for the first to commit, then finds it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.schemas import PurchaseCreate, RefundCreate
from gateway.tables import purchases, refunds
from gateway.webhooks import domain as webhooks
from kit.db import request_driver_connection
from kit.errors import Conflict, FieldError, NotFound, Unprocessable, ValidationFailed
from kit.events import delivery_states, publish
from kit.imports import MAX_LINES, ImportReport, ParsedLines, RejectedLine, parse_lines
from kit.json import loads
from kit.types import check_money
from kit.webhooks import PurchaseAccepted, PurchaseRefunded

__all__ = [
    "MAX_BATCH_LINES",
    "PURCHASE_CONSUMERS",
    "REFUND_CONSUMERS",
    "accept_batch",
    "accept_purchase",
    "accept_refund",
    "get_purchase",
    "read_batch",
]

PURCHASE_CONSUMERS = ("points", "coupon", "recommend", "survey")
MAX_BATCH_LINES = MAX_LINES
PURCHASE_EVENT = "purchase.created"
REFUND_CONSUMERS = ("points", "recommend")


def _encoded(purchase: PurchaseCreate) -> tuple[bytes, str]:
    """The purchase as stored and published, and its fingerprint (what tells a resent purchase from a clash).

    pydantic's own JSON writer: the same bytes as dumping `model_dump(mode="json")`, at a third of the cost."""
    encoded = purchase.__pydantic_serializer__.to_json(purchase)
    return encoded, hashlib.sha256(encoded).hexdigest()


async def accept_purchase(session: AsyncSession, purchase: PurchaseCreate) -> None:
    encoded, fingerprint = _encoded(purchase)
    body = loads(encoded)
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
    await publish(session, PURCHASE_EVENT, body, PURCHASE_CONSUMERS, event_id=inserted)
    await _enqueue_webhook(session, inserted, body)


async def _enqueue_webhook(session: AsyncSession, event_id: uuid.UUID, body: dict[str, Any]) -> None:
    purchase_view = {k: v for k, v in body.items() if k != "email"}
    await webhooks.enqueue(
        session,
        event_id,
        PurchaseAccepted.type,
        {"customer_id": body["customer_id"], "purchase": purchase_view},
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


@dataclass
class _Line:
    number: int
    purchase_id: str
    customer_id: str
    text: str
    fingerprint: str


def _conflict(line: _Line) -> RejectedLine:
    message = "A purchase with this purchase_id was already accepted with different contents (purchase_conflict)."
    return RejectedLine(line=line.number, errors=[FieldError("purchase_id", message)])


def _lines(parsed: ParsedLines[PurchaseCreate]) -> list[_Line]:
    lines = []
    for number, purchase in parsed.valid:
        encoded, fingerprint = _encoded(purchase)
        lines.append(_Line(number, purchase.purchase_id, purchase.customer_id, encoded.decode(), fingerprint))
    return lines


_INSERT_PURCHASES = """
    INSERT INTO purchases (purchase_id, customer_id, body_hash, body, event_id)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]::jsonb[], $5::uuid[])
    ON CONFLICT (purchase_id) DO NOTHING
    RETURNING purchase_id
"""
_EXISTING = "SELECT purchase_id, body_hash FROM purchases WHERE purchase_id = ANY($1::text[])"
_INSERT_EVENTS = """
    INSERT INTO outbox_events (id, type, payload)
    SELECT id, $2, payload FROM unnest($1::uuid[], $3::text[]::jsonb[]) AS e (id, payload)
"""
# delivery ids ascend in file order, consumer by consumer: the relay delivers in id order
_INSERT_DELIVERIES = """
    INSERT INTO outbox_deliveries (event_id, consumer)
    SELECT e.id, c.consumer
      FROM unnest($1::uuid[]) WITH ORDINALITY AS e (id, n)
     CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS c (consumer, k)
     ORDER BY e.n, c.k
"""


async def accept_batch(session: AsyncSession, parsed: ParsedLines[PurchaseCreate]) -> ImportReport:
    """Many purchases in one transaction: each valid line is accepted, a duplicate (the same purchase_id with the
    same contents, earlier in this file or before it), or rejected as a conflict; every accepted purchase is
    published exactly as a single one, in file order. Statements are set-based (arrays unnested): a handful,
    whatever the number of lines."""
    duplicates = 0
    refused: list[RejectedLine] = []
    first: dict[str, _Line] = {}
    candidates: list[_Line] = []
    for line in _lines(parsed):
        earlier = first.get(line.purchase_id)
        if earlier is None:
            first[line.purchase_id] = line
            candidates.append(line)
        elif earlier.fingerprint == line.fingerprint:
            duplicates += 1
        else:
            refused.append(_conflict(line))
    if not candidates:
        return parsed.report(0, duplicates, refused)
    connection = await request_driver_connection(session)
    event_ids = {line.purchase_id: uuid.uuid4() for line in candidates}
    # inserted in purchase_id order: two batches sharing purchases wait for each other, never deadlock
    ordered = sorted(candidates, key=lambda line: line.purchase_id)
    inserted = {
        row[0]
        for row in await connection.fetch(
            _INSERT_PURCHASES,
            [line.purchase_id for line in ordered],
            [line.customer_id for line in ordered],
            [line.fingerprint for line in ordered],
            [line.text for line in ordered],
            [event_ids[line.purchase_id] for line in ordered],
        )
    }
    existing = [line for line in candidates if line.purchase_id not in inserted]
    if existing:
        stored = dict(await connection.fetch(_EXISTING, [line.purchase_id for line in existing]))
        for line in existing:
            if stored.get(line.purchase_id) == line.fingerprint:
                duplicates += 1
            else:
                refused.append(_conflict(line))
    fresh = [line for line in candidates if line.purchase_id in inserted]
    if fresh:
        ids = [event_ids[line.purchase_id] for line in fresh]
        await connection.execute(_INSERT_EVENTS, ids, PURCHASE_EVENT, [line.text for line in fresh])
        await connection.execute(_INSERT_DELIVERIES, ids, list(PURCHASE_CONSUMERS))
        if await webhooks.subscribed(session, PurchaseAccepted.type):
            for line in fresh:
                await _enqueue_webhook(session, event_ids[line.purchase_id], loads(line.text))
    return parsed.report(len(fresh), duplicates, refused)


async def read_batch(chunks: AsyncIterator[bytes], content_type: str) -> ParsedLines[PurchaseCreate]:
    """Each line validated as `POST /v1/purchases` validates its body (NDJSON, or CSV naming the same fields)."""
    return await parse_lines(chunks, content_type, PurchaseCreate, max_lines=MAX_BATCH_LINES)
