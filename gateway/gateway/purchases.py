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

from sqlalchemy.ext.asyncio import AsyncSession

from gateway import purchase_repository as repository
from gateway.purchase_repository import NewPurchase, RefundRow
from gateway.schemas import PurchaseCreate, RefundCreate
from gateway.webhooks import domain as webhooks
from kit.contracts import PurchaseCreated, PurchaseRefunded
from kit.errors import Conflict, FieldError, NotFound, Unprocessable, ValidationFailed
from kit.events import delivery_states, publish
from kit.imports import MAX_LINES, ImportReport, ParsedLines, RejectedLine, parse_lines
from kit.json import loads
from kit.logging import request_id_var
from kit.types import check_money
from kit.webhooks import PurchaseAccepted
from kit.webhooks import PurchaseRefunded as RefundWebhook

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

PURCHASE_CONSUMERS = PurchaseCreated.consumers
MAX_BATCH_LINES = MAX_LINES
REFUND_CONSUMERS = PurchaseRefunded.consumers


def _event(purchase: PurchaseCreate) -> PurchaseCreated:
    """The `purchase.created` payload; its business time (`occurred_at`) travels in the envelope. Built without
    validating again: `PurchaseCreate` checked every field at least as strictly as the contract does."""
    return PurchaseCreated.model_construct(
        purchase_id=purchase.purchase_id,
        customer_id=purchase.customer_id,
        email=purchase.email,
        currency=purchase.currency,
        total=purchase.total,
        items=purchase.items,
    )


def _encoded(purchase: PurchaseCreate) -> tuple[bytes, str]:
    """The purchase as stored and published, and its fingerprint (what tells a resent purchase from a clash).

    pydantic's own JSON writer: the same bytes as dumping `model_dump(mode="json")`, at a third of the cost."""
    encoded = purchase.__pydantic_serializer__.to_json(purchase)
    return encoded, hashlib.sha256(encoded).hexdigest()


async def accept_purchase(session: AsyncSession, purchase: PurchaseCreate) -> None:
    encoded, fingerprint = _encoded(purchase)
    body = loads(encoded)
    # The event id is chosen before the insert so the purchase row can name it; publishing only if we won.
    inserted = await repository.insert_purchase(session, purchase.purchase_id, purchase.customer_id, fingerprint, body)
    if inserted is None:
        existing = await repository.body_hash(session, purchase.purchase_id)
        if existing != fingerprint:
            raise Conflict(
                "A purchase with this purchase_id was already accepted with different contents.",
                code="purchase_conflict",
            )
        return
    await publish(session, _event(purchase), occurred_at=purchase.occurred_at, event_id=inserted)
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
    row = await repository.find_purchase(session, purchase_id)
    if row is None:
        raise NotFound("No purchase with this id.")
    refund_rows = await repository.refunds_of(session, purchase_id)
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
    purchase = await repository.find_purchase(session, purchase_id, lock=True)
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
    existing = await repository.find_refund(session, refund.refund_id)
    if existing is not None:
        same = existing.purchase_id == purchase_id and (
            existing.full_refund if refund.amount is None else existing.amount == refund.amount
        )
        if not same:
            raise Conflict("This refund_id was already used for another refund.", code="refund_conflict")
        return {"refund_id": existing.refund_id, "purchase_id": purchase_id, "amount": existing.amount}
    remaining = total - await repository.refunded_amount(session, purchase_id)
    amount = remaining if refund.amount is None else refund.amount
    if amount <= 0 or amount > remaining:
        raise Unprocessable(
            f"Only {remaining} {purchase.body['currency']} of this purchase is left to refund.",
            code="refund_exceeds_total",
            remaining=str(remaining),
        )
    refunded_event = PurchaseRefunded(
        purchase_id=purchase_id,
        refund_id=refund.refund_id,
        customer_id=purchase.customer_id,
        amount=None if amount == total else amount,
        total=total,
        currency=purchase.body["currency"],
    )
    event_id = await publish(session, refunded_event)
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
        RefundWebhook.type,
        {"customer_id": purchase.customer_id, "refund": refund_view},
        datetime.now(UTC),
    )
    await repository.insert_refund(
        session, RefundRow(refund.refund_id, purchase_id, amount, refund.amount is None, event_id)
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
    event_ids = {line.purchase_id: uuid.uuid4() for line in candidates}
    # in purchase_id order: two imports sharing purchases wait for each other, never deadlock
    new = [
        NewPurchase(line.purchase_id, line.customer_id, line.fingerprint, line.text, event_ids[line.purchase_id])
        for line in sorted(candidates, key=lambda line: line.purchase_id)
    ]
    inserted = await repository.insert_purchases(session, new)
    existing = [line for line in candidates if line.purchase_id not in inserted]
    if existing:
        stored = await repository.body_hashes(session, [line.purchase_id for line in existing])
        for line in existing:
            if stored.get(line.purchase_id) == line.fingerprint:
                duplicates += 1
            else:
                refused.append(_conflict(line))
    fresh = [line for line in candidates if line.purchase_id in inserted]
    if fresh:
        by_id = {purchase.purchase_id: purchase for purchase in new}
        in_file_order = [by_id[line.purchase_id] for line in fresh]
        await repository.publish_purchases(
            session, PurchaseCreated.type, in_file_order, PURCHASE_CONSUMERS, request_id_var.get()
        )
        if await webhooks.subscribed(session, PurchaseAccepted.type):
            for line in fresh:
                await _enqueue_webhook(session, event_ids[line.purchase_id], loads(line.text))
    return parsed.report(len(fresh), duplicates, refused)


async def read_batch(chunks: AsyncIterator[bytes], content_type: str) -> ParsedLines[PurchaseCreate]:
    """Each line validated as `POST /v1/purchases` validates its body (NDJSON, or CSV naming the same fields)."""
    return await parse_lines(chunks, content_type, PurchaseCreate, max_lines=MAX_BATCH_LINES)
