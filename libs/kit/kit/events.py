"""Events between processes: a transactional outbox on the producing side, an inbox on the consuming side.

- :func:`publish` writes an event and one delivery per consumer in the caller's transaction, so the event
  exists exactly when the change that caused it committed.
- :class:`OutboxRelay` claims due deliveries (`FOR UPDATE SKIP LOCKED`, so replicas share the work) in the order
  they were published, one lane per consumer (a slow consumer holds back only its own), posts them in batches
  (`POST /internal/events:batch`, many events a request, in order), retries with exponential backoff and full
  jitter, and parks a delivery as `failed` after `max_attempts` (re-drivable by :func:`redrive`).
- :func:`events_router` is the consumer's side: `POST /internal/events` (one event) and
  `POST /internal/events:batch` (many, applied in order in one transaction). Each payload is parsed once into
  the contract its handler names (:mod:`kit.contracts`); one that does not fit is refused there and only there
  (`events.malformed`, `events_malformed_total`, a permanent failure the relay parks). Each event id is recorded
  in `processed_events` in the same transaction as the handler's effect, so a redelivery changes nothing (that
  is the one dedupe: the route ignores an `Idempotency-Key`).

The envelope carries the event's business time (`occurred_at`), its publishing time (`published_at`) and the
request id that caused it, which is bound to the log context while a consumer handles the event.

Order: one customer's events reach a consumer in the order they were published. A round claims none of a
customer's deliveries while an earlier one of theirs waits for its retry or is in another round's hands
(whatever the number of relay workers: claims take turns). Within a batch the consumer
applies them in order; when one fails, the same customer's later events in that batch are not applied
(`deferred`) and are retried after it, with the same delay (one delay per consumer and round, so the retried
deliveries keep their order). Other customers' events in the batch are applied as usual.

A handler may take a whole run of events at once (:class:`Batched`): a batch's consecutive events of one type go
to it together, in order, so it can apply them set-based (a few statements for hundreds of events). It must leave
exactly what applying them one by one leaves; a single event is a run of one.

Handlers treat business refusals (a throttled customer, a rule that does not match) as "nothing to do" and
return normally; they raise only when the event could not be handled and should be retried.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import aiohttp
import structlog
from fastapi import APIRouter
from prometheus_client import Counter
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from kit import outbox_repository, relay_repository
from kit.auth import INTERNAL_TOKEN_HEADER
from kit.client import Upstreams
from kit.contracts import Contract
from kit.db import Database, SessionDep, TransactionalRoute
from kit.errors import DomainError, NotFound, Unprocessable
from kit.json import dumps, loads
from kit.leases import Backoff
from kit.logging import bound_request_id, request_id_var
from kit.outbox_repository import DeliveryView
from kit.relay_repository import ClaimedDelivery

__all__ = [
    "Batched",
    "DeliveryView",
    "Envelope",
    "Event",
    "EventBatch",
    "EventHandler",
    "EventResult",
    "Handler",
    "OutboxRelay",
    "apply_batch",
    "delivery_states",
    "events_router",
    "list_deliveries",
    "publish",
    "publish_many",
    "redrive",
]

log = structlog.get_logger("kit.events")
REFUSED = Counter(
    "outbox_deliveries_refused_total", "Deliveries a consumer refused with a 4xx (parked at once)", ["consumer"]
)
PARKED = Counter(
    "outbox_deliveries_parked_total", "Deliveries parked as failed, refused or out of attempts", ["consumer"]
)
MALFORMED = Counter(
    "events_malformed_total", "Events this consumer refused because their payload does not fit the contract", ["type"]
)
EVENTS_PATH = "/internal/events"
BATCH_PATH = "/internal/events:batch"
MAX_BATCH_EVENTS = 1000

P = TypeVar("P", bound=BaseModel)
C = TypeVar("C", bound=Contract)


class Envelope(BaseModel):
    """An event as it travels: `occurred_at` is the business time of what it describes (a purchase's own time),
    `published_at` when its producer committed it (a relay from before the two were told apart sent only the
    latter, as `occurred_at`), `request_id` the request that caused it. The payload is parsed by the router."""

    id: uuid.UUID
    type: str
    occurred_at: datetime
    published_at: datetime | None = None
    request_id: str | None = None
    payload: dict[str, Any]

    @property
    def ordering_key(self) -> str | None:
        """Events with the same key are applied in order (a customer's events)."""
        customer = self.payload.get("customer_id")
        return customer if isinstance(customer, str) else None


@dataclass(frozen=True, slots=True)
class Event(Generic[P]):
    """What a handler receives: the envelope with its payload parsed into the event type's contract."""

    id: uuid.UUID
    type: str
    occurred_at: datetime
    published_at: datetime
    request_id: str | None
    payload: P

    @property
    def ordering_key(self) -> str | None:
        """Events with the same key are applied in order (a customer's events)."""
        customer = getattr(self.payload, "customer_id", None)
        return customer if isinstance(customer, str) else None


class EventBatch(BaseModel):
    events: Annotated[list[Envelope], Field(max_length=MAX_BATCH_EVENTS)]


class EventResult(BaseModel):
    """What became of one event of a batch. `processed` and `duplicate` are done; `failed` is retried (or parked
    when `permanent`); `deferred` was not tried, because an earlier event of its customer (`blocked_by`) failed."""

    id: uuid.UUID
    status: Literal["processed", "duplicate", "failed", "deferred"]
    error: str | None = None
    permanent: bool = False
    blocked_by: uuid.UUID | None = None


class Handler(Generic[P]):
    """Handles its event type one event at a time; `payload` is the contract the router parses it into."""

    __slots__ = ("handle", "payload")

    def __init__(self, payload: type[P], handle: Callable[[AsyncSession, Event[P]], Awaitable[None]]) -> None:
        self.payload = payload
        self.handle = handle

    async def __call__(self, session: AsyncSession, event: Event[P]) -> None:
        await self.handle(session, event)


class Batched(Generic[P]):
    """A handler that applies a run of events of its type at once, in order (set-based where it can).

    Called with one event it applies a run of one, so single deliveries and batched ones share one code path;
    the run must leave exactly what its events applied one by one would (same order per customer)."""

    __slots__ = ("many", "payload")

    def __init__(self, payload: type[P], many: Callable[[AsyncSession, Sequence[Event[P]]], Awaitable[None]]) -> None:
        self.payload = payload
        self.many = many

    async def __call__(self, session: AsyncSession, event: Event[P]) -> None:
        await self.many(session, [event])


EventHandler = Handler[Any] | Batched[Any]


async def publish(
    session: AsyncSession,
    event: Contract,
    *,
    occurred_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    consumers: Sequence[str] | None = None,
) -> uuid.UUID:
    """Put `event` in this service's outbox, in the caller's transaction, for its contract's consumers (or
    `consumers`). `occurred_at` is the business time of what it describes (now unless given); the request id
    of the current request (or of the event being handled) goes with it."""
    event_id = event_id or uuid.uuid4()
    await publish_many(session, [(event_id, event, occurred_at)], consumers=consumers)
    return event_id


async def publish_many(
    session: AsyncSession,
    events: Sequence[tuple[uuid.UUID, C, datetime | None]],
    *,
    consumers: Sequence[str] | None = None,
) -> None:
    """Several events of one type (`(event_id, payload, occurred_at)`, in the order given, which is the order
    of their deliveries) in one statement: the events and their deliveries in a single round trip."""
    if not events:
        return
    contract = type(events[0][1])
    now = datetime.now(UTC)
    await outbox_repository.insert_events(
        session,
        contract.type,
        request_id_var.get(),
        [(event_id, event.model_dump_json(), occurred_at or now) for event_id, event, occurred_at in events],
        contract.consumers if consumers is None else consumers,
    )
    if log.isEnabledFor(logging.DEBUG):
        for event_id, _, _ in events:
            log.debug("events.published", event_id=str(event_id), type=contract.type)


async def delivery_states(session: AsyncSession, event_id: uuid.UUID) -> dict[str, str]:
    """Each consumer's delivery status of one event."""
    return await outbox_repository.delivery_states(session, event_id)


async def list_deliveries(
    session: AsyncSession, status: str | None, limit: int, after: tuple[int] | None
) -> list[DeliveryView]:
    """Newest first, for the admin view of the outbox (`after` is the cursor: the last row's id)."""
    return await outbox_repository.list_deliveries(session, status, limit, after)


async def redrive(session: AsyncSession, delivery_id: int) -> None:
    """Put a parked delivery back in the queue, with a fresh attempt budget."""
    if not await outbox_repository.redrive(session, delivery_id):
        raise NotFound("No failed delivery with this id.")


PER_LANE = 100
CLAIM_WINDOW_BATCHES = 8


def _retryable_status(status: int) -> bool:
    return not 400 <= status < 500 or status in (401, 408, 409, 425, 429)


class _Outcome:
    """What a round did with one claimed delivery."""

    __slots__ = ("deferred", "delivery_id", "error", "permanent")

    def __init__(self, delivery_id: int, error: str | None = None, *, permanent: bool = False, deferred: bool = False):
        self.delivery_id = delivery_id
        self.error = error
        self.permanent = permanent
        self.deferred = deferred


class OutboxRelay:
    """Delivers this process's outbox to its consumers; one per process, any number of replicas."""

    def __init__(
        self,
        database: Database,
        consumers: Mapping[str, str],
        internal_token: str,
        *,
        upstreams: Upstreams | None = None,
        batch_size: int = 500,
        events_per_request: int = 250,
        max_attempts: int = 10,
        base_delay_seconds: float = 1.0,
        max_delay_seconds: float = 300.0,
        timeout_seconds: float = 5.0,
        lease_seconds: float = 60.0,
    ) -> None:
        self.database = database
        self.consumers = {name: url.rstrip("/") for name, url in consumers.items()}
        self.batch_size = batch_size
        self.events_per_request = max(1, min(events_per_request, MAX_BATCH_EVENTS))
        self.max_attempts = max_attempts
        self.backoff = Backoff(base_delay_seconds, max_delay_seconds)
        # a request carries up to `events_per_request` events: its time budget grows with them, and the lease
        # outlives every request of a round (a consumer's requests go one after another, to keep order)
        self._request_timeout = timeout_seconds * max(1.0, self.events_per_request / 25)
        requests_per_round = -(-batch_size // self.events_per_request)
        self.lease = max(lease_seconds, self._request_timeout * requests_per_round * 2)
        # the process's one pool per service (kit.client), shared with whatever else it sends there
        self._own_upstreams = upstreams is None
        self.upstreams = upstreams or Upstreams(self.consumers, timeout=self._request_timeout, connect_timeout=1.0)
        self._headers = {INTERNAL_TOKEN_HEADER: internal_token, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=self._request_timeout, sock_connect=1.0)

    async def _post(self, consumer: str, url: str, rows: Sequence[ClaimedDelivery]) -> list[_Outcome]:
        """One request carrying `rows` (one consumer's, in order): an outcome per row."""
        body = dumps(
            {
                "events": [
                    {
                        "id": str(r.event_id),
                        "type": r.type,
                        "occurred_at": r.occurred_at or r.created_at,
                        "published_at": r.created_at,
                        "request_id": r.request_id,
                        "payload": r.payload,
                    }
                    for r in rows
                ]
            }
        )
        try:
            async with self.upstreams.session(consumer).post(
                url + BATCH_PATH, data=body, headers=self._headers, timeout=self._timeout
            ) as response:
                status = response.status
                answer = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            return [_Outcome(r.id, error) for r in rows]
        if status >= 300:
            error = f"HTTP {status}: {answer[:400].decode(errors='replace')}"
            return [_Outcome(r.id, error, permanent=not _retryable_status(status)) for r in rows]
        results = {item["id"]: item for item in loads(answer)["results"]}
        outcomes = []
        for row in rows:
            result = results.get(str(row.event_id))
            if result is None:
                outcomes.append(_Outcome(row.id, "the consumer's answer did not name this event"))
            elif result["status"] in ("processed", "duplicate"):
                outcomes.append(_Outcome(row.id))
            elif result["status"] == "deferred":
                outcomes.append(_Outcome(row.id, f"held back behind event {result.get('blocked_by')}", deferred=True))
            else:
                outcomes.append(_Outcome(row.id, result.get("error") or "failed", permanent=result.get("permanent")))
        return outcomes

    async def _deliver(self, consumer: str, rows: Sequence[ClaimedDelivery]) -> list[_Outcome]:
        """One consumer's share of a round, in requests of `events_per_request`, one after another. When a
        whole request fails, the requests after it are not sent (their events may follow its customers')."""
        url = self.consumers.get(consumer)
        if url is None:
            return [_Outcome(r.id, f"no URL configured for consumer {consumer!r}", permanent=True) for r in rows]
        outcomes: list[_Outcome] = []
        for start in range(0, len(rows), self.events_per_request):
            chunk = rows[start : start + self.events_per_request]
            done = await self._post(consumer, url, chunk)
            outcomes += done
            if all(o.error is not None and not o.deferred for o in done):
                outcomes += [_Outcome(r.id, "held back behind a failed request", deferred=True)
                             for r in rows[start + self.events_per_request :]]  # fmt: skip
                break
        return outcomes

    async def run_once(self) -> int:
        """One round for every consumer at once (each its own lane, so a slow consumer holds back only its own
        deliveries), and one for deliveries naming a consumer this relay does not know (parked)."""
        lanes = [*self.consumers, None]
        return sum(await asyncio.gather(*(self._round(consumer) for consumer in lanes)))

    async def _round(self, consumer: str | None) -> int:
        async with self.database.transaction() as session:
            rows = await relay_repository.claim(
                session,
                consumer,
                list(self.consumers),
                batch=self.batch_size,
                per_lane=PER_LANE,
                window=self.batch_size * CLAIM_WINDOW_BATCHES,
                lease_seconds=self.lease,
            )
        if not rows:
            return 0
        by_consumer: dict[str, list[ClaimedDelivery]] = {}
        for row in sorted(rows, key=lambda r: r.id):
            by_consumer.setdefault(row.consumer, []).append(row)
        shares = await asyncio.gather(*(self._deliver(c, share) for c, share in by_consumer.items()))
        attempts = {row.id: row.attempts for row in rows}
        consumers = {row.id: row.consumer for row in rows}
        async with self.database.transaction() as session:
            for name, outcomes in zip(by_consumer, shares, strict=True):
                await self._record(session, name, outcomes, attempts, consumers)
        return len(rows)

    async def _record(
        self,
        session: AsyncSession,
        consumer: str,
        outcomes: Sequence[_Outcome],
        attempts: Mapping[int, int],
        consumers: Mapping[int, str],
    ) -> None:
        delivered = [o.delivery_id for o in outcomes if o.error is None]
        if delivered:
            await relay_repository.delivered(session, delivered)
        unfinished = [o for o in outcomes if o.error is not None]
        if not unfinished:
            return
        # one delay for the consumer's whole unfinished share: retried in the order they were published
        delay = self.backoff.delay(max(attempts[o.delivery_id] + 1 for o in unfinished))
        for outcome in unfinished:
            delivery_id, error = outcome.delivery_id, outcome.error
            tried = attempts[delivery_id] + (0 if outcome.deferred else 1)
            parked = outcome.permanent or tried >= self.max_attempts
            if outcome.permanent:
                # A consumer refused the event itself: no retry can help, and someone must look at it
                # (GET /v1/admin/deliveries?status=failed lists it with this reason).
                REFUSED.labels(consumer).inc()
                log.error("outbox.delivery_refused", delivery_id=delivery_id, consumer=consumer, error=error)
            elif not outcome.deferred:
                log.warning(
                    "outbox.delivery_failed", delivery_id=delivery_id, attempts=tried, parked=parked, error=error
                )
            if parked:
                PARKED.labels(consumers[delivery_id]).inc()
            await relay_repository.unfinished(
                session, delivery_id, parked=parked, attempts=tried, error=error, delay_seconds=delay
            )

    async def run_until_idle(self) -> None:
        """Drain everything that is due now (the periodic job calls this), each consumer at its own pace."""

        async def drain(consumer: str | None) -> None:
            while await self._round(consumer) >= self.batch_size:
                pass

        await asyncio.gather(*(drain(consumer) for consumer in [*self.consumers, None]))

    async def aclose(self) -> None:
        if self._own_upstreams:
            await self.upstreams.aclose()


class MalformedEvent(Unprocessable):
    """An event this consumer cannot take as it is: an unknown type, or a payload that does not fit its
    contract. No retry can help (the relay parks it); someone must look at it."""


def _parse(handlers: Mapping[str, EventHandler], envelope: Envelope) -> Event[Any] | MalformedEvent:
    """The one place an event's payload is parsed into its contract, and refused when it does not fit."""
    handler = handlers.get(envelope.type)
    if handler is None:
        refusal = MalformedEvent(f"This service does not handle {envelope.type!r} events.", code="unknown_event_type")
    else:
        try:
            payload = handler.payload.model_validate(envelope.payload)
        except ValidationError as exc:
            reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())[:400]
            refusal = MalformedEvent(f"The {envelope.type!r} payload does not fit its contract: {reason}",
                                     code="malformed_event")  # fmt: skip
        else:
            return Event(
                id=envelope.id,
                type=envelope.type,
                occurred_at=envelope.occurred_at,
                published_at=envelope.published_at or envelope.occurred_at,
                request_id=envelope.request_id,
                payload=payload,
            )
    MALFORMED.labels(envelope.type[:64]).inc()
    log.error(
        "events.malformed",
        event_id=str(envelope.id),
        type=envelope.type,
        code=refusal.instance_code,
        error=refusal.detail,
        origin_request_id=envelope.request_id,
    )
    return refusal


def _run_request_id(events: Sequence[Event[Any]]) -> str | None:
    """The request id a run of events shares (a run from several requests binds none: each event's own line
    names its request)."""
    ids = {event.request_id for event in events}
    return ids.pop() if len(ids) == 1 else None


async def _handle_run(session: AsyncSession, handler: EventHandler, events: Sequence[Event[Any]]) -> None:
    """Hand a run of one type's events to its handler, each event's request id bound to the log context while
    it is handled (so a purchase can be followed by its request id through every consumer's log)."""
    if log.isEnabledFor(logging.DEBUG):
        for event in events:
            with bound_request_id(event.request_id):
                log.debug("events.handling", event_id=str(event.id), type=event.type)
    if isinstance(handler, Batched):
        with bound_request_id(_run_request_id(events)):
            await handler.many(session, events)
        return
    for event in events:
        with bound_request_id(event.request_id):
            await handler(session, event)


async def _apply(session: AsyncSession, handlers: Mapping[str, EventHandler], event: Event[Any]) -> str:
    if not await outbox_repository.record_processed(session, event.id, event.type):
        return "duplicate"
    await _handle_run(session, handlers[event.type], [event])
    return "processed"


async def _apply_all(
    session: AsyncSession, handlers: Mapping[str, EventHandler], events: Sequence[Event[Any]]
) -> list[EventResult]:
    """Every event of a batch, in order: one statement records them all as processed (those already recorded
    are duplicates), then each run of consecutive events of one type goes to its handler, a `Batched` one all
    at once. Raises when any event fails (the caller falls back to one event at a time)."""
    unique = list({event.id: event for event in reversed(events)}.values())[::-1]  # first of each id
    fresh = await outbox_repository.record_processed_many(session, [(e.id, e.type) for e in unique])
    results: list[EventResult] = []
    todo: list[Event[Any]] = []
    for event in events:
        first = event.id in fresh
        fresh.discard(event.id)  # a second copy of an event in the same batch is a duplicate
        results.append(EventResult(id=event.id, status="processed" if first else "duplicate"))
        if first:
            todo.append(event)
    start = 0
    while start < len(todo):
        handler = handlers[todo[start].type]
        end = start + 1
        if isinstance(handler, Batched):
            while end < len(todo) and todo[end].type == todo[start].type:
                end += 1
        await _handle_run(session, handler, todo[start:end])
        start = end
    return results


def _failure(exc: DomainError) -> tuple[str, bool]:
    """The error a batch result reports for a refusal, and whether it is permanent (parked at once)."""
    return f"HTTP {exc.status} {exc.instance_code}: {exc.detail}"[:500], not _retryable_status(exc.status)


async def apply_batch(
    session: AsyncSession, handlers: Mapping[str, EventHandler], envelopes: Sequence[Envelope]
) -> list[EventResult]:
    """Parse each event into its contract (once), then apply them in order in the caller's transaction, one
    result each; an event that does not parse fails for good (it is parked).

    First all at once (one savepoint): the common case, where every event applies. If any fails, that attempt
    is undone and the events are applied one savepoint each, so that one failure stops only its customer's
    later events (`deferred`) and nobody else's."""
    parsed = [_parse(handlers, envelope) for envelope in envelopes]
    events = [event for event in parsed if isinstance(event, Event)]
    if len(events) == len(parsed):
        try:
            async with session.begin_nested():
                return await _apply_all(session, handlers, events)
        except Exception:
            pass
    results: list[EventResult] = []
    blocked: dict[str, uuid.UUID] = {}
    for envelope, event in zip(envelopes, parsed, strict=True):
        key = envelope.ordering_key
        if key is not None and key in blocked:
            results.append(EventResult(id=envelope.id, status="deferred", blocked_by=blocked[key]))
            continue
        if isinstance(event, MalformedEvent):
            error, permanent = _failure(event)
            results.append(EventResult(id=envelope.id, status="failed", error=error, permanent=permanent))
        else:
            try:
                async with session.begin_nested():
                    status = await _apply(session, handlers, event)
            except DomainError as exc:
                error, permanent = _failure(exc)
                results.append(EventResult(id=event.id, status="failed", error=error, permanent=permanent))
            except Exception as exc:
                log.warning("events.batch_event_failed", event_id=str(event.id), type=event.type, error=repr(exc)[:300])
                results.append(EventResult(id=event.id, status="failed", error=f"{type(exc).__name__}: {exc}"[:500]))
            else:
                results.append(EventResult(id=event.id, status=status))  # type: ignore[arg-type]
                continue
        if key is not None:
            blocked[key] = envelope.id
    return results


class _InboxRoute(TransactionalRoute):
    """`processed_events` is the one dedupe of a delivery: an Idempotency-Key on it is not a second one."""

    honours_idempotency_key = False


def events_router(handlers: Mapping[str, EventHandler]) -> Any:
    """`POST /internal/events` and `POST /internal/events:batch` for a consuming service: each event id is
    handled once, its payload parsed into the contract its handler names."""
    for event_type, handler in handlers.items():
        declared = getattr(handler.payload, "type", event_type)
        if declared != event_type:
            raise ValueError(f"the handler of {event_type!r} events takes {declared!r} payloads")
    router = APIRouter(route_class=_InboxRoute, include_in_schema=False)

    @router.post(EVENTS_PATH)
    async def receive(envelope: Envelope, session: SessionDep) -> dict[str, str]:
        event = _parse(handlers, envelope)
        if isinstance(event, MalformedEvent):
            raise event
        return {"status": await _apply(session, handlers, event)}

    @router.post(BATCH_PATH)
    async def receive_batch(batch: EventBatch, session: SessionDep) -> dict[str, list[EventResult]]:
        return {"results": await apply_batch(session, handlers, batch.events)}

    return router
