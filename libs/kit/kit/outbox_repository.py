"""SQL of the outbox's producing and consuming sides (:mod:`kit.events`): publishing events with their
deliveries, recording processed events (the inbox's one dedupe), and the admin view of deliveries.

The relay's own statements (claiming due deliveries, recording outcomes) are in :mod:`kit.relay_repository`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kit.tables import outbox_deliveries, outbox_events, processed_events

__all__ = [
    "DeliveryView",
    "delivery_states",
    "insert_events",
    "list_deliveries",
    "record_processed",
    "record_processed_many",
    "redrive",
]


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One delivery with its event's type and publishing time, as the admin view lists it."""

    id: int
    event_id: uuid.UUID
    event_type: str
    consumer: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    created_at: datetime


_PUBLISH = text(
    """
    WITH event AS (
        INSERT INTO outbox_events (id, type, payload, occurred_at, request_id)
        SELECT id, :type, payload, occurred_at, :request_id
          FROM unnest(CAST(:ids AS uuid[]), CAST(CAST(:payloads AS text[]) AS jsonb[]), CAST(:times AS timestamptz[]))
               WITH ORDINALITY AS e (id, payload, occurred_at, n)
         ORDER BY n
        RETURNING id
    )
    INSERT INTO outbox_deliveries (event_id, consumer)
    SELECT e.id, c.consumer
      FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS e (id, n)
      JOIN event USING (id)
     CROSS JOIN unnest(CAST(:consumers AS varchar[])) WITH ORDINALITY AS c (consumer, k)
     ORDER BY e.n, c.k
    """
)


async def insert_events(
    session: AsyncSession,
    event_type: str,
    request_id: str | None,
    events: Sequence[tuple[uuid.UUID, str, datetime]],
    consumers: Sequence[str],
) -> None:
    """Events of one type (`(id, payload as JSON, occurred_at)`, in order) and a delivery of each to every one of
    `consumers`, in one statement (one round trip), in the caller's transaction."""
    params = {
        "type": event_type,
        "request_id": request_id,
        "ids": [event_id for event_id, _, _ in events],
        "payloads": [payload for _, payload, _ in events],
        "times": [occurred_at for _, _, occurred_at in events],
        "consumers": list(consumers),
    }
    await session.execute(_PUBLISH, params)


async def record_processed(session: AsyncSession, event_id: uuid.UUID, event_type: str) -> bool:
    """Record an event as processed; False when it was already (a redelivery)."""
    first = await session.scalar(
        insert(processed_events)
        .values(event_id=event_id, type=event_type)
        .on_conflict_do_nothing()
        .returning(processed_events.c.event_id)
    )
    return first is not None


_RECORD_PROCESSED = text(
    """
    INSERT INTO processed_events (event_id, type)
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS varchar[]))
    ON CONFLICT DO NOTHING
    RETURNING event_id
    """
)


async def record_processed_many(session: AsyncSession, events: Sequence[tuple[uuid.UUID, str]]) -> set[uuid.UUID]:
    """Record `(event_id, type)` pairs as processed in one statement: the ids that were not recorded before."""
    params = {"ids": [event_id for event_id, _ in events], "types": [event_type for _, event_type in events]}
    return set((await session.execute(_RECORD_PROCESSED, params)).scalars())


async def delivery_states(session: AsyncSession, event_id: uuid.UUID) -> dict[str, str]:
    """Each consumer's delivery status of one event."""
    rows = await session.execute(
        select(outbox_deliveries.c.consumer, outbox_deliveries.c.status).where(outbox_deliveries.c.event_id == event_id)
    )
    return {consumer: status for consumer, status in rows}


async def list_deliveries(
    session: AsyncSession, status: str | None, limit: int, after: tuple[int] | None
) -> list[DeliveryView]:
    """Newest first, for the admin view of the outbox (`after` is the cursor: the last row's id); `limit + 1` rows,
    so the caller knows whether there is a next page."""
    query = (
        select(
            outbox_deliveries.c.id,
            outbox_deliveries.c.event_id,
            outbox_events.c.type.label("event_type"),
            outbox_deliveries.c.consumer,
            outbox_deliveries.c.status,
            outbox_deliveries.c.attempts,
            outbox_deliveries.c.last_error,
            outbox_deliveries.c.next_attempt_at,
            outbox_events.c.created_at,
        )
        .join(outbox_events, outbox_events.c.id == outbox_deliveries.c.event_id)
        .order_by(outbox_deliveries.c.id.desc())
        .limit(limit + 1)
    )
    if status:
        query = query.where(outbox_deliveries.c.status == status)
    if after is not None:
        query = query.where(outbox_deliveries.c.id < after[0])
    return [DeliveryView(**row._mapping) for row in await session.execute(query)]


async def redrive(session: AsyncSession, delivery_id: int) -> bool:
    """Put a parked delivery back in the queue with a fresh attempt budget; False when no failed one has this id."""
    result = await session.execute(
        update(outbox_deliveries)
        .where(outbox_deliveries.c.id == delivery_id, outbox_deliveries.c.status == "failed")
        .values(status="pending", attempts=0, next_attempt_at=func.now(), last_error=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
