"""SQL of the outbox relay (:class:`kit.events.OutboxRelay`): claiming due deliveries in order, under a lease,
and recording what became of them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from kit.leases import DueRows, claim_due
from kit.tables import outbox_deliveries

__all__ = ["ClaimedDelivery", "claim", "delivered", "unfinished"]

# Claims of one consumer's deliveries take turns (a transaction-scoped advisory lock per schema and consumer),
# so each sees the leases of the one before, whatever the number of relay workers.
_CLAIM_TURN = text(
    "SELECT pg_advisory_xact_lock(hashtextextended("
    "'outbox-claim:' || current_schema() || ':' || coalesce(CAST(:consumer AS varchar), ''), 0))"
)

# A customer's deliveries to a consumer go in the order they were published. Each round takes, per (consumer,
# customer) lane, a run of its oldest pending deliveries that are all due (at most :per_lane): a lane whose head
# waits for its retry, or is in another round's hands (leased), gives nothing. Lanes come oldest head first, so a
# retried delivery goes to the back without starving anyone, and the LIMIT can only cut a lane's run short, never
# take a later delivery without the earlier ones. Events without a customer are each their own lane.
# A round looks at the oldest :window pending deliveries only (a prefix in id order holds every earlier delivery
# of each lane it touches, so order is kept), which keeps a round's cost flat however deep the queue (a year's
# history imported at once); when nothing in that window is due, the round looks at them all (:window NULL).
_DUE = DueRows(
    table="outbox_deliveries",
    prelude="""
    WITH oldest AS (
        SELECT id, consumer, next_attempt_at, event_id FROM outbox_deliveries
         WHERE status = 'pending'
           AND (CAST(:consumer AS varchar) IS NULL AND NOT consumer = ANY(:known)
                OR consumer = CAST(:consumer AS varchar))
         ORDER BY id LIMIT CAST(:window AS integer)),
    pending AS (
        SELECT d.id, d.consumer, d.next_attempt_at,
               coalesce(e.payload->>'customer_id', 'event:' || d.id) AS lane
          FROM oldest d JOIN outbox_events e ON e.id = d.event_id),
    ranked AS (
        SELECT id, consumer, lane,
               row_number() OVER lane_order AS place,
               max(next_attempt_at) OVER lane_order AS latest_so_far,
               first_value(next_attempt_at) OVER lane_order AS head_due
          FROM pending
        WINDOW lane_order AS (PARTITION BY consumer, lane ORDER BY id ROWS UNBOUNDED PRECEDING)),
    lined_up AS (
        SELECT id FROM ranked
         WHERE place <= :per_lane AND latest_so_far <= now()
         ORDER BY head_due, consumer, lane, id
         LIMIT :batch)""",
    chosen="SELECT id FROM outbox_deliveries WHERE id IN (SELECT id FROM lined_up) FOR UPDATE SKIP LOCKED",
    joins={"outbox_events AS e": "e.id = d.event_id"},
    returning="d.id, d.consumer, d.attempts, e.id AS event_id, e.type, e.payload, e.created_at, e.occurred_at,"
    " e.request_id",
)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery claimed by a relay round, with the event it carries."""

    id: int
    consumer: str
    attempts: int
    event_id: uuid.UUID
    type: str
    payload: dict[str, Any]
    created_at: datetime
    occurred_at: datetime | None
    request_id: str | None


async def claim(
    session: AsyncSession,
    consumer: str | None,
    known: Sequence[str],
    *,
    batch: int,
    per_lane: int,
    window: int,
    lease_seconds: float,
) -> list[ClaimedDelivery]:
    """A round's due deliveries for `consumer` (None: those naming a consumer not in `known`), in lanes kept in
    order; the oldest `window` pending deliveries first, and all of them when nothing there is due."""
    await session.execute(_CLAIM_TURN, {"consumer": consumer})
    params = {"consumer": consumer, "known": list(known), "per_lane": per_lane}
    rows = await claim_due(
        session, _DUE, ClaimedDelivery, batch=batch, lease_seconds=lease_seconds, window=window, **params
    )
    if not rows:
        rows = await claim_due(
            session, _DUE, ClaimedDelivery, batch=batch, lease_seconds=lease_seconds, window=None, **params
        )
    return rows


async def delivered(session: AsyncSession, ids: Sequence[int]) -> None:
    await session.execute(
        update(outbox_deliveries)
        .where(outbox_deliveries.c.id.in_(ids))
        .values(status="delivered", delivered_at=func.now(), attempts=outbox_deliveries.c.attempts + 1, last_error=None)
    )


async def unfinished(
    session: AsyncSession, delivery_id: int, *, parked: bool, attempts: int, error: str | None, delay_seconds: float
) -> None:
    """A delivery that is due again after `delay_seconds`, or parked as failed."""
    await session.execute(
        update(outbox_deliveries)
        .where(outbox_deliveries.c.id == delivery_id)
        .values(
            status="failed" if parked else "pending",
            attempts=attempts,
            last_error=error,
            next_attempt_at=func.now() + timedelta(seconds=delay_seconds),
        )
    )
