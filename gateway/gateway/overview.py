"""The customer overview, served from a read model the gateway keeps by events (docs/purchases.md#customer-overview
says why, and what a customer may see stale for how long).

Each customer has one row per service in `overview_parts` (gateway/overview_repository.py) holding that
service's parts exactly as the overview shows them (the points service's two: the balance, and the rewards
closest to affordable). An overview is one read of those rows when they are current; a part that is not is
fetched from its service (the fan-out of before, for that part alone) and stored.

How the rows are kept:
- **events**: the services already send the gateway an event for every change a customer sees in their
  overview (points earned, redeemed, reversed or expired, a tier change, a reward or coupon redeemed, a coupon
  issued, a survey answered; `SIGNALS`), and the survey service tells it of each invitation (`survey.invited`,
  with the moment it falls due). The gateway's consumer counts each as a change of that service's row
  (`changed`), in the transaction that records the event; the refresher (a periodic job) fetches the rows whose
  count moved since they were stored (`seen`), a bounded batch at a time. A part known to be stale is never
  served: until the refresher has it, a visit fetches it itself.
- **recommendations** come from a model: the refresher fetches them again when the model's version moves on
  (`ReadModel.watch`, every second). Until it reaches a customer, their recommendations of the previous model
  are shown (they were the model's answer a moment ago).
- **time**: a part whose contents say when they stop being true (the next expiry of points, a coupon's end of
  validity, a survey invitation's, an invitation falling due) is fresh until then; every part at most
  `OVERVIEW_MAX_AGE_SECONDS`, which bounds what changes with no event (a tier's trailing window, catalogue and
  campaign edits, adjustments).
- **the customer's own writes** through this gateway (any write on a path naming them) are never shown undone:
  the rows stored before the write answered are not served to them; their next visit fetches every part afresh
  (and stores it), before the write's own event arrives.

A service that is down or hung (its `/healthz` not answering twice in a row, probed every second) has its
parts null and is named in `unavailable`, as is any part whose fetch failed: never dropped silently. A circuit
breaker per service makes a dead or hung service cost nothing per visit while it is open.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import overview_repository as repo
from kit.auth import INTERNAL_TOKEN_HEADER
from kit.client import Upstreams
from kit.contracts import SurveyInvited
from kit.db import Database
from kit.events import Batched, Event, EventHandler

__all__ = ["SERVICES", "SIGNALS", "CircuitBreaker", "ReadModel", "signalled"]

log = structlog.get_logger("gateway.overview")

SERVICES = ("points", "coupon", "recommend", "survey")

# The events that change what a customer's overview shows, and the service whose parts they change.
SIGNALS: dict[str, str] = {
    "points.earned": "points",
    "points.redeemed": "points",
    "points.reversed": "points",
    "points.expired": "points",
    "tier.changed": "points",
    "reward.redeemed": "points",
    "coupon.issued": "coupon",
    "coupon.redeemed": "coupon",
    "survey.answered": "survey",
}


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `reset_seconds` lets one trial call through
    (half-open): its success closes the circuit, its failure opens it again."""

    def __init__(self, threshold: int = 3, reset_seconds: float = 5.0) -> None:
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_in_flight = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at < self.reset_seconds or self.trial_in_flight:
            return False
        self.trial_in_flight = True
        return True

    def record(self, ok: bool) -> None:
        self.trial_in_flight = False
        if ok:
            self.failures = 0
            self.opened_at = None
            return
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = time.monotonic()


@dataclass(frozen=True)
class Part:
    """One request to a service for the overview, and the parts its answer gives (each part's key in the overview,
    and how it is shaped from the answer)."""

    service: str
    path: str
    shapes: Mapping[str, Callable[[Any], Any]]


def _points(body: dict[str, Any]) -> dict[str, Any]:
    expiring = body.get("expiring") or []
    return {"balance": body["balance"], "tier": body.get("tier"), "next_expiry": expiring[0] if expiring else None}


def _closest_rewards(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The rewards the customer may redeem but cannot afford yet, cheapest first: "40 points to go"."""
    return [
        {k: item[k] for k in ("id", "name", "kind", "cost_points", "points_needed", "image_url")}
        for item in body["items"]
    ]


PARTS = (
    # the points service answers its two parts in one request (the public routes' answers: the balance, and
    # `/v1/customers/{id}/rewards?available=true&affordable=false&limit=3`)
    Part(
        "points",
        "/internal/customers/{id}/overview-parts?closest=3",
        {"points": lambda body: _points(body["points"]), "rewards": lambda body: _closest_rewards(body["rewards"])},
    ),
    Part("coupon", "/v1/customers/{id}/coupons?status=active&limit=50", {"coupons": lambda body: body["items"]}),
    Part("recommend", "/v1/customers/{id}/recommendations?limit=5", {"recommendations": lambda body: body["items"]}),
    Part("survey", "/v1/customers/{id}/surveys?status=pending", {"surveys": lambda body: {"pending": body["items"]}}),
)
PARTS_OF = {service: [p for p in PARTS if p.service == service] for service in SERVICES}
MODEL_VERSION = "model_version"  # kept beside the recommendations, never shown


def _instants(service: str, body: dict[str, Any]) -> list[str]:
    """When the stored parts stop being true by themselves (ISO 8601 times from the services' answers)."""
    if service == "points":
        expiry = body["points"]["next_expiry"]
        return [expiry["expires_at"]] if expiry and expiry.get("expires_at") else []
    if service == "coupon":
        return [c["valid_until"] for c in body["coupons"] if c.get("valid_until")]
    if service == "survey":
        return [s["expires_at"] for s in body["surveys"]["pending"] if s.get("expires_at")]
    return []


def fresh_until(service: str, body: dict[str, Any], fetched_at: datetime, max_age: float) -> datetime:
    """An instant already past when the parts were fetched bounds nothing: the service answered after it, so
    what it showed is its answer for now (fetching it again on every visit would change nothing; imported
    history's points once listed expiries years past, and every visit fetched them again)."""
    until = fetched_at + timedelta(seconds=max_age)
    for instant in _instants(service, body):
        try:
            moment = datetime.fromisoformat(instant)
        except (TypeError, ValueError):
            continue
        if moment > fetched_at:
            until = min(until, moment)
    return until


class _Fetched:
    """One service's parts as fetched: the body to store, or None when a part failed (what did answer is
    still shown)."""

    __slots__ = ("body", "partial", "started")

    def __init__(self, started: datetime, body: dict[str, Any] | None, partial: dict[str, Any]) -> None:
        self.started = started
        self.body = body
        self.partial = partial


class ReadModel:
    """The overview's read path, the customers' own writes (marks), the refresher and the services' watch."""

    def __init__(
        self,
        database: Database,
        upstreams: Upstreams,
        breakers: Mapping[str, CircuitBreaker],
        *,
        internal_token: str,
        budget_seconds: float,
        max_age_seconds: float,
        refresh_timeout_seconds: float = 10.0,
        refresh_batch: int = 32,
        refresh_concurrency: int = 4,
    ) -> None:
        self.database = database
        self.upstreams = upstreams
        self.breakers = breakers
        self.internal_token = internal_token
        self.budget = budget_seconds
        self.max_age = max_age_seconds
        self.refresh_timeout = refresh_timeout_seconds
        self.refresh_batch = refresh_batch
        # a probe waits longer than a part's budget, and a service is down after two failed probes in a row:
        # a loaded machine's slow answer is not an outage
        self.probe_timeout = max(1.0, budget_seconds)
        self._failed_probes = dict.fromkeys(SERVICES, 0)
        self._slots = asyncio.Semaphore(refresh_concurrency)
        self.alive = dict.fromkeys(SERVICES, True)
        self.model_version: int | None = None
        # the customers' own writes: how many are under way, and when the last one answered
        self._writing: dict[str, int] = {}
        self._written: dict[str, float] = {}

    # --- the customer's own writes ---

    def writing(self, customer_id: str) -> None:
        self._writing[customer_id] = self._writing.get(customer_id, 0) + 1

    def written(self, customer_id: str) -> None:
        left = self._writing.get(customer_id, 1) - 1
        if left > 0:
            self._writing[customer_id] = left
        else:
            self._writing.pop(customer_id, None)
        self._written[customer_id] = time.time()

    def _own_write_after(self, customer_id: str) -> float:
        """Parts fetched before this moment are not shown to the customer (their own write came after)."""
        if customer_id in self._writing:
            return math.inf
        return self._written.get(customer_id, -math.inf)

    # --- reading ---

    def _headers(self, request_id: str) -> dict[str, str]:
        return {INTERNAL_TOKEN_HEADER: self.internal_token, "X-Request-ID": request_id, "X-Caller-Kind": "internal"}

    async def _fetch_part(
        self, part: Part, customer_id: str, headers: dict[str, str], timeout: float | None
    ) -> tuple[dict[str, Any] | None, Any]:
        """(the parts as shown, the service's answer), or (None, None) when it failed or the circuit is open.
        A visit waits `budget` at most, behind the service's circuit breaker; the refresher (`timeout` given)
        waits longer and leaves the breakers to the visits."""
        breaker = self.breakers[part.service] if timeout is None else None
        if breaker is not None and not breaker.allow():
            return None, None
        url = self.upstreams.urls[part.service] + part.path.format(id=customer_id)
        try:
            async with asyncio.timeout(self.budget if timeout is None else timeout):
                async with self.upstreams.session(part.service).get(url, headers=headers) as response:
                    if response.status != 200:
                        raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
                    answer = await response.json(content_type=None)
                    value = {key: shape(answer) for key, shape in part.shapes.items()}
        except (TimeoutError, aiohttp.ClientError, ConnectionError, KeyError, ValueError, TypeError) as exc:
            if breaker is not None:
                breaker.record(False)
            log.warning("overview.part_unavailable", service=part.service, error=type(exc).__name__)
            return None, None
        if breaker is not None:
            breaker.record(True)
        return value, answer

    async def fetch(
        self, service: str, customer_id: str, headers: dict[str, str], timeout: float | None = None
    ) -> _Fetched:
        started = datetime.now(UTC)
        parts = PARTS_OF[service]
        results = await asyncio.gather(*(self._fetch_part(p, customer_id, headers, timeout) for p in parts))
        partial: dict[str, Any] = {}
        for part, (values, _) in zip(parts, results, strict=True):
            partial.update(values if values is not None else dict.fromkeys(part.shapes))
        if any(answer is None for _, answer in results):
            return _Fetched(started, None, partial)
        body = dict(partial)
        if service == "recommend":
            body[MODEL_VERSION] = results[0][1].get(MODEL_VERSION)
        return _Fetched(started, body, partial)

    def _to_store(self, customer_id: str, service: str, fetched: _Fetched, seen: int) -> repo.FetchedPart:
        assert fetched.body is not None
        until = fresh_until(service, fetched.body, fetched.started, self.max_age)
        return repo.FetchedPart(customer_id, service, fetched.body, seen, fetched.started, until)

    def _servable(self, service: str, row: repo.StoredPart, now: datetime, own_write_after: float) -> bool:
        if row.body is None or row.fetched_at is None or row.fresh_until is None or now >= row.fresh_until:
            return False
        if row.fetched_at.timestamp() < own_write_after:
            return False
        if row.due and any(moment <= now for moment in row.due):
            return False  # an invitation fell due since it was fetched
        # recommendations of a previous model (or before the latest purchases) are still the model's answer;
        # anything else an event says changed is fetched afresh until the refresher has it
        return service == "recommend" or row.seen >= row.changed

    async def read(self, customer_id: str, request_id: str) -> dict[str, Any]:
        # no database connection is held while parts are fetched: one statement reads the rows, one stores what
        # had to be fetched
        rows = {row.service: row for row in await repo.load(self.database, customer_id)}
        now = datetime.now(UTC)
        own_write_after = self._own_write_after(customer_id)
        shown: dict[str, dict[str, Any] | None] = {}
        missing: list[str] = []
        for service in SERVICES:
            if not self.alive[service]:
                shown[service] = None
                continue
            row = rows.get(service)
            if row is not None and self._servable(service, row, now, own_write_after):
                shown[service] = row.body
            else:
                missing.append(service)
        if missing:
            headers = self._headers(request_id)
            fetched = await asyncio.gather(*(self.fetch(s, customer_id, headers) for s in missing))
            for service, result in zip(missing, fetched, strict=True):
                shown[service] = result.partial
            await repo.store(
                self.database,
                [
                    self._to_store(customer_id, service, result, row.changed if (row := rows.get(service)) else 0)
                    for service, result in zip(missing, fetched, strict=True)
                    if result.body is not None
                ],
            )
        overview: dict[str, Any] = {"customer_id": customer_id}
        unavailable: list[str] = []
        for part in PARTS:
            parts = shown[part.service]
            for key in part.shapes:
                value = parts.get(key) if parts is not None else None
                overview[key] = value
                if value is None and part.service not in unavailable:
                    unavailable.append(part.service)
        overview["unavailable"] = unavailable
        return overview

    # --- background: the refresher and the watch ---

    async def refresh(self) -> int:
        """Fetch a batch of rows events made stale, and store them; returns how many were fetched."""
        async with self.database.transaction() as session:
            rows = await repo.stale(session, self.refresh_batch)
        if not rows:
            return 0
        headers = self._headers(f"overview-refresh-{uuid.uuid4().hex[:12]}")

        async def bounded(row: Any) -> _Fetched:
            async with self._slots:
                return await self.fetch(row.service, row.customer_id, headers, self.refresh_timeout)

        rows = [row for row in rows if self.alive[row.service]]
        fetched = await asyncio.gather(*(bounded(row) for row in rows))
        await repo.store(
            self.database,
            [
                self._to_store(row.customer_id, row.service, result, row.changed)
                for row, result in zip(rows, fetched, strict=True)
                if result.body is not None
            ],
        )
        return len(rows)

    async def watch(self) -> None:
        """Every service's liveness (a part is never shown for a service that does not answer), and the model
        version of the recommendations."""
        headers = self._headers(f"overview-watch-{uuid.uuid4().hex[:12]}")

        async def probe(service: str) -> None:
            try:
                async with asyncio.timeout(self.probe_timeout):
                    url = self.upstreams.urls[service] + "/healthz"
                    async with self.upstreams.session(service).get(url, headers=headers) as response:
                        answered = response.status == 200
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                answered = False
            self._failed_probes[service] = 0 if answered else self._failed_probes[service] + 1
            alive = self._failed_probes[service] < 2
            if alive != self.alive[service]:
                log.warning("overview.service_liveness", service=service, alive=alive)
            self.alive[service] = alive

        await asyncio.gather(*(probe(service) for service in SERVICES))
        if self.alive["recommend"]:
            await self._watch_model(headers)
        cutoff = time.time() - self.max_age
        self._written = {c: t for c, t in self._written.items() if t > cutoff}

    async def _watch_model(self, headers: dict[str, str]) -> None:
        try:
            async with asyncio.timeout(self.probe_timeout):
                url = self.upstreams.urls["recommend"] + "/v1/recommend/model"
                async with self.upstreams.session("recommend").get(url, headers=headers) as response:
                    version = int((await response.json(content_type=None))["version"])
        except (TimeoutError, aiohttp.ClientError, ConnectionError, KeyError, ValueError, TypeError):
            return
        if version == self.model_version:
            return
        async with self.database.transaction() as session:
            marked = await repo.mark_recommendations_stale(session, version)
        log.info("overview.model_version", version=version, recommendations_to_refresh=marked)
        self.model_version = version


def signalled(handlers: Mapping[str, EventHandler]) -> dict[str, EventHandler]:
    """`handlers` with every event of `SIGNALS` also counted as a change of its customer's overview, in the
    same transaction (set-based: a run of events is two statements)."""

    def counting(event_type: str, handler: EventHandler) -> EventHandler:
        service = SIGNALS[event_type]

        async def many(session: AsyncSession, events: Sequence[Event[Any]]) -> None:
            if isinstance(handler, Batched):
                await handler.many(session, events)
            else:
                for event in events:
                    await handler(session, event)
            changes = [(e.ordering_key, service) for e in events if e.ordering_key is not None]
            await repo.mark_changed(session, changes, SERVICES)  # type: ignore[arg-type]

        return Batched(handler.payload, many)

    counted = {t: counting(t, h) if t in SIGNALS else h for t, h in handlers.items()}
    counted[SurveyInvited.type] = Batched(SurveyInvited, _invited)
    return counted


async def _invited(session: AsyncSession, events: Sequence[Event[SurveyInvited]]) -> None:
    """`survey.invited`: the survey row is fetched again now (the invitation exists) and when it falls due."""
    invitations = [e.payload for e in events]
    await repo.mark_changed(session, [(i.customer_id, "survey") for i in invitations], SERVICES)
    now = datetime.now(UTC)
    await repo.add_due(session, "survey", [(i.customer_id, i.send_at) for i in invitations if i.send_at > now])
