"""The customer overview: the four services asked concurrently, each within its time budget.

The answer is always 200 while the gateway is up: a part whose service did not answer in time (or failed) is
null and its service is named in `unavailable`. A circuit breaker per service makes a dead or hung service cost
nothing per request while it is open. Nothing is cached, so an incomplete answer is never served twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from gateway.proxy import Upstreams
from kit.auth import INTERNAL_TOKEN_HEADER

__all__ = ["CircuitBreaker", "build_overview"]

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


PARTS = (
    Part("points", "points", "/v1/customers/{id}/points", _points),
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
        if value is None:
            overview["unavailable"].append(part.service)
    return overview
