"""What the front door refuses before any work is done: oversized headers and bodies, callers past their
rate, client addresses that keep failing authentication or hammer the public pages.

Each limit is a setting (see `gateway.settings` and docs/operations.md, "Security"). Every refusal is a
problem+json answer: 413 and 431 for size, 429 with `Retry-After` for rates. With `REDIS_URL` the rates are
counted in Redis, once for all the gateway's replicas; without it, or while Redis is unreachable, each
replica counts on its own (`kit.shared_state`).
"""

from __future__ import annotations

from prometheus_client import Counter
from starlette.types import Message, Receive, Scope

from gateway.principals import Principal
from gateway.ratelimit import RateLimiter, retry_after
from gateway.routing import BodyClass
from gateway.settings import GatewaySettings
from kit.errors import DomainError, PayloadTooLarge, TooManyRequests
from kit.shared_state import SharedRateLimiter, SharedState

__all__ = ["HeadersTooLarge", "Limits", "PayloadTooLarge"]

REFUSALS = Counter("gateway_refusals_total", "Requests the front door refused before routing them", ["reason"])


class HeadersTooLarge(DomainError, status=431, code="headers_too_large"): ...


class Limits:
    def __init__(self, settings: GatewaySettings, shared: SharedState | None = None) -> None:
        self.max_header_bytes = settings.max_header_bytes
        keys = settings.rate_limit_max_keys
        shared = shared or SharedState(None)

        def limiter(name: str, per_minute: int) -> SharedRateLimiter:
            return SharedRateLimiter(name, per_minute, shared, RateLimiter(per_minute, max_keys=keys))

        self.partner = limiter("partner", settings.rate_limit_partner_per_minute)
        self.customer = limiter("customer", settings.rate_limit_customer_per_minute)
        self.public_pages = limiter("public", settings.rate_limit_public_per_minute)
        self.failed_authentication = limiter("failed_auth", settings.failed_auth_per_minute)

    def check_headers(self, scope: Scope) -> None:
        if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_header_bytes:
            REFUSALS.labels("headers_too_large").inc()
            raise HeadersTooLarge(f"The request headers exceed {self.max_header_bytes} bytes.")

    async def check_caller(self, principal: Principal) -> None:
        limiter = self.customer if principal.kind == "customer" else self.partner
        wait = await limiter.acquire(principal.rate_key)
        if wait:
            REFUSALS.labels("rate_limited").inc()
            raise TooManyRequests("Rate limit exceeded; retry later.", retry_after=retry_after(wait))

    async def check_public(self, client_address: str) -> None:
        wait = await self.public_pages.acquire(client_address)
        if wait:
            REFUSALS.labels("public_rate_limited").inc()
            raise TooManyRequests("Too many requests from this address; retry later.", retry_after=retry_after(wait))

    async def check_failed_authentication(self, client_address: str) -> None:
        wait = await self.failed_authentication.peek(client_address)
        if wait:
            REFUSALS.labels("failed_authentication").inc()
            raise TooManyRequests(
                "Too many failed authentications from this address; retry later.",
                code="authentication_throttled",
                retry_after=retry_after(wait),
            )

    async def record_failed_authentication(self, client_address: str) -> None:
        await self.failed_authentication.acquire(client_address)

    async def bounded_body(self, scope: Scope, receive: Receive, body: BodyClass) -> Receive:
        """A declared length over the route's limit is refused at once; a chunked body is read up to the limit
        (and refused past it), so nothing downstream ever holds more than the route allows."""
        length = _content_length(scope)
        if length is not None:
            if length > body.value:
                REFUSALS.labels("payload_too_large").inc()
                raise PayloadTooLarge(f"The request body exceeds {body.value} bytes for this operation.")
            return receive
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") and not _chunked(scope):
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > body.value:
                REFUSALS.labels("payload_too_large").inc()
                raise PayloadTooLarge(f"The request body exceeds {body.value} bytes for this operation.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        scope["headers"] = [*scope["headers"], (b"content-length", str(len(whole)).encode())]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": whole, "more_body": False}

        return replay


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


def _chunked(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])
