"""The purchases' and refunds' SQL: one at a time through SQLAlchemy, and a whole import set-based (arrays unnested,
on the request's asyncpg connection, in its transaction: a handful of statements whatever the number of lines)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.tables import purchases, refunds
from kit.db import request_driver_connection

__all__ = [
    "NewPurchase",
    "PurchaseRow",
    "RefundRow",
    "body_hash",
    "body_hashes",
    "find_purchase",
    "find_refund",
    "insert_purchase",
    "insert_purchases",
    "insert_refund",
    "publish_purchases",
    "refunded_amount",
    "refunds_of",
]


@dataclass(frozen=True, slots=True)
class PurchaseRow:
    purchase_id: str
    customer_id: str
    body: dict[str, Any]
    event_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class RefundRow:
    refund_id: str
    purchase_id: str
    amount: Decimal
    full_refund: bool
    event_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class NewPurchase:
    """One purchase of an import: its body as stored (JSON text) and the id of the event that publishes it."""

    purchase_id: str
    customer_id: str
    body_hash: str
    body: str
    event_id: uuid.UUID


_PURCHASE_COLUMNS = (purchases.c.purchase_id, purchases.c.customer_id, purchases.c.body, purchases.c.event_id)
_REFUND_COLUMNS = (
    refunds.c.refund_id,
    refunds.c.purchase_id,
    refunds.c.amount,
    refunds.c.full_refund,
    refunds.c.event_id,
)


async def insert_purchase(
    session: AsyncSession, purchase_id: str, customer_id: str, body_hash: str, body: dict[str, Any]
) -> uuid.UUID | None:
    """The new purchase's event id (chosen by the insert, so the row names it); None when the purchase_id is taken.
    A concurrent insert of the same purchase_id waits for the first to commit, then finds it taken."""
    return await session.scalar(
        insert(purchases)
        .values(
            purchase_id=purchase_id,
            customer_id=customer_id,
            body_hash=body_hash,
            body=body,
            event_id=func.gen_random_uuid(),
        )
        .on_conflict_do_nothing(index_elements=["purchase_id"])
        .returning(purchases.c.event_id)
    )


async def body_hash(session: AsyncSession, purchase_id: str) -> str | None:
    return await session.scalar(select(purchases.c.body_hash).where(purchases.c.purchase_id == purchase_id))


async def find_purchase(session: AsyncSession, purchase_id: str, *, lock: bool = False) -> PurchaseRow | None:
    """`lock`: FOR UPDATE, so refunds of one purchase are checked one at a time."""
    query = select(*_PURCHASE_COLUMNS).where(purchases.c.purchase_id == purchase_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return PurchaseRow(**row._mapping) if row else None


async def refunds_of(session: AsyncSession, purchase_id: str) -> list[RefundRow]:
    """Oldest first."""
    query = select(*_REFUND_COLUMNS).where(refunds.c.purchase_id == purchase_id).order_by(refunds.c.created_at)
    return [RefundRow(**row._mapping) for row in await session.execute(query)]


async def find_refund(session: AsyncSession, refund_id: str) -> RefundRow | None:
    row = (await session.execute(select(*_REFUND_COLUMNS).where(refunds.c.refund_id == refund_id))).first()
    return RefundRow(**row._mapping) if row else None


async def refunded_amount(session: AsyncSession, purchase_id: str) -> Decimal:
    refunded = await session.scalar(
        select(func.coalesce(func.sum(refunds.c.amount), 0)).where(refunds.c.purchase_id == purchase_id)
    )
    return Decimal(refunded or 0)


async def insert_refund(session: AsyncSession, refund: RefundRow) -> None:
    await session.execute(insert(refunds).values(**asdict(refund)))


_INSERT_PURCHASES = """
    INSERT INTO purchases (purchase_id, customer_id, body_hash, body, event_id)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]::jsonb[], $5::uuid[])
    ON CONFLICT (purchase_id) DO NOTHING
    RETURNING purchase_id
"""
_BODY_HASHES = "SELECT purchase_id, body_hash FROM purchases WHERE purchase_id = ANY($1::text[])"
# the payload is the stored body itself (copying the jsonb value costs a tenth of parsing the same text again),
# less its `occurred_at`, which is the event's business time: what remains is the `purchase.created` contract
# (kit.contracts.PurchaseCreated), validated as `PurchaseCreate` on the way in
_INSERT_PURCHASE_EVENTS = """
    INSERT INTO outbox_events (id, type, payload, occurred_at, request_id)
    SELECT event_id, $2, body - 'occurred_at', CAST(body->>'occurred_at' AS timestamptz), $3
      FROM purchases WHERE purchase_id = ANY($1::text[])
"""
# delivery ids ascend in the events' order, consumer by consumer: the relay delivers in id order
_INSERT_DELIVERIES = """
    INSERT INTO outbox_deliveries (event_id, consumer)
    SELECT e.id, c.consumer
      FROM unnest($1::uuid[]) WITH ORDINALITY AS e (id, n)
     CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS c (consumer, k)
     ORDER BY e.n, c.k
"""


async def insert_purchases(session: AsyncSession, new: Sequence[NewPurchase]) -> set[str]:
    """The purchase_ids inserted (the others were taken), in the order given."""
    connection = await request_driver_connection(session)
    rows = await connection.fetch(
        _INSERT_PURCHASES,
        [p.purchase_id for p in new],
        [p.customer_id for p in new],
        [p.body_hash for p in new],
        [p.body for p in new],
        [p.event_id for p in new],
    )
    return {row[0] for row in rows}


async def body_hashes(session: AsyncSession, purchase_ids: list[str]) -> dict[str, str]:
    connection = await request_driver_connection(session)
    return dict(await connection.fetch(_BODY_HASHES, purchase_ids))


async def publish_purchases(
    session: AsyncSession,
    event_type: str,
    inserted: Sequence[NewPurchase],
    consumers: Sequence[str],
    request_id: str | None,
) -> None:
    """An event per purchase this transaction inserted, its payload the stored body less its business time, into
    the kit's outbox with a delivery per consumer (as `kit.events.publish` writes one), in the order given."""
    connection = await request_driver_connection(session)
    await connection.execute(_INSERT_PURCHASE_EVENTS, [p.purchase_id for p in inserted], event_type, request_id)
    await connection.execute(_INSERT_DELIVERIES, [p.event_id for p in inserted], list(consumers))
