"""Events between processes: a transactional outbox on the producing side, an inbox on the consuming side.

- :func:`publish` writes an event and one delivery per consumer in the caller's transaction, so the event
  exists exactly when the change that caused it committed.
- :class:`OutboxRelay` claims due deliveries (`FOR UPDATE SKIP LOCKED`, so replicas share the work), posts each
  to the consumer's `POST /internal/events` with the event id as `Idempotency-Key`, retries with exponential
  backoff and full jitter, and parks a delivery as `failed` after `max_attempts` (re-drivable by :func:`redrive`).
- :func:`events_router` is the consumer's endpoint: it records the event id in `processed_events` in the
  same transaction as the handler's effect, so a redelivery changes nothing.

Handlers treat business refusals (a throttled customer, a rule that does not match) as "nothing to do" and
return normally; they raise only when the event could not be handled and should be retried.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import aiohttp
import structlog
from prometheus_client import Counter
from pydantic import BaseModel
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kit.auth import INTERNAL_TOKEN_HEADER
from kit.db import Database, SessionDep, service_router
from kit.errors import NotFound, Unprocessable
from kit.json import dumps, loads
from kit.tables import outbox_deliveries, outbox_events, processed_events

__all__ = [
    "Event",
    "EventHandler",
    "OutboxRelay",
    "delivery_states",
    "events_router",
    "list_deliveries",
    "publish",
    "redrive",
]

log = structlog.get_logger("kit.events")
REFUSED = Counter(
    "outbox_deliveries_refused_total", "Deliveries a consumer refused with a 4xx (parked at once)", ["consumer"]
)
PARKED = Counter(
    "outbox_deliveries_parked_total", "Deliveries parked as failed, refused or out of attempts", ["consumer"]
)
EVENTS_PATH = "/internal/events"


class Event(BaseModel):
    id: uuid.UUID
    type: str
    occurred_at: datetime
    payload: dict[str, Any]


EventHandler = Callable[[AsyncSession, Event], Awaitable[None]]


async def publish(
    session: AsyncSession,
    event_type: str,
    payload: Mapping[str, Any],
    consumers: Sequence[str],
    *,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    event_id = event_id or uuid.uuid4()
    await session.execute(insert(outbox_events).values(id=event_id, type=event_type, payload=loads(dumps(payload))))
    if consumers:
        await session.execute(insert(outbox_deliveries), [{"event_id": event_id, "consumer": c} for c in consumers])
    return event_id


async def delivery_states(session: AsyncSession, event_id: uuid.UUID) -> dict[str, str]:
    rows = await session.execute(
        select(outbox_deliveries.c.consumer, outbox_deliveries.c.status).where(outbox_deliveries.c.event_id == event_id)
    )
    return {consumer: status for consumer, status in rows}


async def list_deliveries(session: AsyncSession, status: str | None, limit: int, after: tuple[int] | None) -> list[Any]:
    """Newest first, for the admin view of the outbox (`after` is the cursor: the last row's id)."""
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
    return list((await session.execute(query)).all())


async def redrive(session: AsyncSession, delivery_id: int) -> None:
    """Put a parked delivery back in the queue, with a fresh attempt budget."""
    result = await session.execute(
        update(outbox_deliveries)
        .where(outbox_deliveries.c.id == delivery_id, outbox_deliveries.c.status == "failed")
        .values(status="pending", attempts=0, next_attempt_at=func.now(), last_error=None)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound("No failed delivery with this id.")


_CLAIM = text(
    """
    UPDATE outbox_deliveries AS d
       SET next_attempt_at = now() + make_interval(secs => :lease)
      FROM outbox_events AS e
     WHERE d.id IN (
             SELECT id FROM outbox_deliveries
              WHERE status = 'pending' AND next_attempt_at <= now()
              ORDER BY next_attempt_at
              LIMIT :batch
              FOR UPDATE SKIP LOCKED)
       AND e.id = d.event_id
    RETURNING d.id, d.consumer, d.attempts, e.id AS event_id, e.type, e.payload, e.created_at
    """
)


class OutboxRelay:
    """Delivers this process's outbox to its consumers; one per process, any number of replicas."""

    def __init__(
        self,
        database: Database,
        consumers: Mapping[str, str],
        internal_token: str,
        *,
        batch_size: int = 100,
        max_attempts: int = 10,
        base_delay_seconds: float = 1.0,
        max_delay_seconds: float = 300.0,
        timeout_seconds: float = 5.0,
        lease_seconds: float = 30.0,
    ) -> None:
        self.database = database
        self.consumers = {name: url.rstrip("/") for name, url in consumers.items()}
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.base_delay = base_delay_seconds
        self.max_delay = max_delay_seconds
        self.lease = max(lease_seconds, timeout_seconds * 2)
        self._internal_token = internal_token
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=1.0)
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx: a relay posts one request per delivery, four per purchase, and httpx cost
        # several times aiohttp's CPU per request on these machines (docs/benchmarks.md, the gateway hop).
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={INTERNAL_TOKEN_HEADER: self._internal_token},
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30),
            )
        return self._http

    def backoff(self, attempts: int) -> float:
        """Full jitter: a random wait up to base * 2^attempts, capped."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempts))

    async def _deliver(self, row: Any) -> tuple[int, str | None, bool]:
        """Returns (delivery id, error or None, whether the error is permanent)."""
        url = self.consumers.get(row.consumer)
        if url is None:
            return row.id, f"no URL configured for consumer {row.consumer!r}", True
        body = dumps({"id": str(row.event_id), "type": row.type, "occurred_at": row.created_at, "payload": row.payload})
        try:
            async with self._session().post(
                url + EVENTS_PATH,
                data=body,
                headers={"Content-Type": "application/json", "Idempotency-Key": str(row.event_id)},
            ) as response:
                status = response.status
                text = "" if status < 300 else (await response.text())[:400]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return row.id, f"{type(exc).__name__}: {exc}"[:500], False
        if status < 300:
            return row.id, None, False
        permanent = 400 <= status < 500 and status not in (401, 408, 409, 425, 429)
        return row.id, f"HTTP {status}: {text}", permanent

    async def run_once(self) -> int:
        async with self.database.transaction() as session:
            rows = (await session.execute(_CLAIM, {"lease": self.lease, "batch": self.batch_size})).all()
        if not rows:
            return 0
        outcomes = await asyncio.gather(*(self._deliver(row) for row in rows))
        attempts = {row.id: row.attempts for row in rows}
        consumers = {row.id: row.consumer for row in rows}
        async with self.database.transaction() as session:
            delivered = [delivery_id for delivery_id, error, _ in outcomes if error is None]
            if delivered:
                await session.execute(
                    update(outbox_deliveries)
                    .where(outbox_deliveries.c.id.in_(delivered))
                    .values(
                        status="delivered",
                        delivered_at=func.now(),
                        attempts=outbox_deliveries.c.attempts + 1,
                        last_error=None,
                    )
                )
            for delivery_id, error, permanent in outcomes:
                if error is None:
                    continue
                tried = attempts[delivery_id] + 1
                parked = permanent or tried >= self.max_attempts
                if permanent:
                    # A consumer refused the event itself: no retry can help, and someone must look at it
                    # (GET /v1/admin/deliveries?status=failed lists it with this reason).
                    REFUSED.labels(consumers[delivery_id]).inc()
                    log.error(
                        "outbox.delivery_refused", delivery_id=delivery_id, consumer=consumers[delivery_id], error=error
                    )
                else:
                    log.warning(
                        "outbox.delivery_failed", delivery_id=delivery_id, attempts=tried, parked=parked, error=error
                    )
                if parked:
                    PARKED.labels(consumers[delivery_id]).inc()
                await session.execute(
                    update(outbox_deliveries)
                    .where(outbox_deliveries.c.id == delivery_id)
                    .values(
                        status="failed" if parked else "pending",
                        attempts=tried,
                        last_error=error,
                        next_attempt_at=func.now() + text(f"make_interval(secs => {self.backoff(tried):.3f})"),
                    )
                )
        return len(rows)

    async def run_until_idle(self) -> None:
        """Drain everything that is due now (the periodic job calls this)."""
        while await self.run_once() >= self.batch_size:
            pass

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()


def events_router(handlers: Mapping[str, EventHandler]) -> Any:
    """`POST /internal/events` for a consuming service: each event id is handled once."""
    router = service_router(include_in_schema=False)

    @router.post(EVENTS_PATH)
    async def receive(event: Event, session: SessionDep) -> dict[str, str]:
        handler = handlers.get(event.type)
        if handler is None:
            raise Unprocessable(f"This service does not handle {event.type!r} events.", code="unknown_event_type")
        first = await session.scalar(
            insert(processed_events)
            .values(event_id=event.id, type=event.type)
            .on_conflict_do_nothing()
            .returning(processed_events.c.event_id)
        )
        if first is None:
            return {"status": "duplicate"}
        await handler(session, event)
        return {"status": "processed"}

    return router
