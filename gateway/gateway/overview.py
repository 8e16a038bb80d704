"""The customer overview: the four services asked concurrently, each within its time budget (the points service
twice: the balance, and the rewards closest to affordable).

The answer is always 200 while the gateway is up: a part whose service did not answer in time (or failed) is
null and its service is named in `unavailable`. A circuit breaker per service makes a dead or hung service cost
nothing per request while it is open.

It is the mobile app's home screen, asked far more often than anything changes, so a complete answer is kept for
`OVERVIEW_CACHE_SECONDS` (default 5) per customer (:class:`OverviewCache`), and concurrent requests for one
customer share one fan-out. What the customer does through this gateway (any write on a path naming them: a
redemption, a preference) drops their entry before and after it, so they never see their own action undone.
What happens behind their back (a purchase's points arriving from the outbox, expiry, a surprise coupon, a
survey invitation falling due, or a write through another gateway replica) shows at most that long after it
happened. An incomplete answer (a part unavailable) is never kept. docs/architecture.md says why.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from gateway.proxy import Upstreams
from kit.auth import INTERNAL_TOKEN_HEADER

__all__ = ["CircuitBreaker", "OverviewCache", "build_overview"]

log = structlog.get_logger("gateway.overview")


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
    service: str
    key: str
    path: str
    shape: Callable[[Any], Any]


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
    Part("points", "points", "/v1/customers/{id}/points", _points),
    Part("points", "rewards", "/v1/customers/{id}/rewards?available=true&affordable=false&limit=3", _closest_rewards),
    Part("coupon", "coupons", "/v1/customers/{id}/coupons?status=active&limit=50", lambda body: body["items"]),
    Part("recommend", "recommendations", "/v1/customers/{id}/recommendations?limit=5", lambda body: body["items"]),
    Part("survey", "surveys", "/v1/customers/{id}/surveys?status=pending", lambda body: {"pending": body["items"]}),
)


async def _fetch(
    part: Part, customer_id: str, upstreams: Upstreams, breaker: CircuitBreaker, headers: dict[str, str], budget: float
) -> Any:
    if not breaker.allow():
        return None
    url = upstreams.urls[part.service] + part.path.format(id=customer_id)
    try:
        async with asyncio.timeout(budget):
            async with upstreams.session(part.service).get(url, headers=headers) as response:
                if response.status != 200:
                    raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
                value = part.shape(await response.json(content_type=None))
    except (TimeoutError, aiohttp.ClientError, ConnectionError, KeyError, ValueError) as exc:
        breaker.record(False)
        log.warning("overview.part_unavailable", service=part.service, error=type(exc).__name__, open=breaker.is_open)
        return None
    breaker.record(True)
    return value


async def build_overview(
    customer_id: str,
    upstreams: Upstreams,
    breakers: dict[str, CircuitBreaker],
    *,
    internal_token: str,
    request_id: str,
    budget_seconds: float,
) -> dict[str, Any]:
    headers = {INTERNAL_TOKEN_HEADER: internal_token, "X-Request-ID": request_id, "X-Caller-Kind": "internal"}
    values = await asyncio.gather(
        *(_fetch(p, customer_id, upstreams, breakers[p.service], headers, budget_seconds) for p in PARTS)
    )
    overview: dict[str, Any] = {"customer_id": customer_id, "unavailable": []}
    for part, value in zip(PARTS, values, strict=True):
        overview[part.key] = value
        if value is None and part.service not in overview["unavailable"]:
            overview["unavailable"].append(part.service)
    return overview


Overview = dict[str, Any]


class OverviewCache:
    """Complete overviews per customer for `ttl_seconds`, at most `max_entries` of them (least recently stored
    go first); one fan-out at a time per customer, shared by the requests that arrive meanwhile."""

    def __init__(self, ttl_seconds: float, max_entries: int = 50_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Overview]] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[Overview]] = {}
        # when each customer's entry was last dropped: a fan-out that began before must not be kept
        self._forgotten: dict[str, float] = {}

    async def get(self, customer_id: str, build: Callable[[], Awaitable[Overview]]) -> Overview:
        if self.ttl <= 0:
            return await build()
        now = time.monotonic()
        hit = self._entries.get(customer_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        flight = self._in_flight.get(customer_id)
        if flight is None:
            flight = asyncio.ensure_future(self._fetch(customer_id, build, now))
            self._in_flight[customer_id] = flight
        return await asyncio.shield(flight)

    async def _fetch(self, customer_id: str, build: Callable[[], Awaitable[Overview]], started: float) -> Overview:
        try:
            overview = await build()
        finally:
            if self._in_flight.get(customer_id) is asyncio.current_task():
                del self._in_flight[customer_id]
        if not overview["unavailable"] and self._forgotten.get(customer_id, -1.0) < started:
            self._entries[customer_id] = (time.monotonic() + self.ttl, overview)
            self._entries.move_to_end(customer_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return overview

    def forget(self, customer_id: str) -> None:
        """The customer changed something: their next overview is fetched afresh."""
        if self.ttl <= 0:
            return
        now = time.monotonic()
        self._entries.pop(customer_id, None)
        self._in_flight.pop(customer_id, None)
        self._forgotten[customer_id] = now
        if len(self._forgotten) > self.max_entries:
            # only drops within the last ttl can still matter (older fan-outs are over by then)
            self._forgotten = {c: t for c, t in self._forgotten.items() if t > now - self.ttl - 60}
