"""The gateway's front door as one pure-ASGI layer: authenticate, rate-limit, authorise, then forward to the
owning service or hand over to the gateway's own routes.

Forwarding uses one pooled `aiohttp.ClientSession` per upstream: measured in the same `make bench` run, it
costs a fraction of httpx's CPU per proxied request (see docs/benchmarks.md). Bodies stream both ways;
status, headers and problem+json errors pass through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.principals import Authenticator, Principal
from gateway.ratelimit import RateLimiter
from gateway.routing import GATEWAY_ROUTES, authorize, match_route
from kit.auth import INTERNAL_TOKEN_HEADER
from kit.errors import DomainError, TooManyRequests, problem_response

__all__ = ["FrontDoor", "Upstreams"]

log = structlog.get_logger("gateway.proxy")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
# Never trusted from outside: the gateway sets these itself.
STRIPPED_REQUEST_HEADERS = HOP_BY_HOP | {
    b"authorization",
    b"x-internal-token",
    b"x-caller-kind",
    b"x-caller-id",
    b"x-caller-scopes",
    b"content-length",
}
STRIPPED_RESPONSE_HEADERS = HOP_BY_HOP | {b"content-length", b"x-request-id", b"date", b"server"}
SMALL_BODY = 1 << 20
REPLAYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class Upstreams:
    """One pooled aiohttp session per service."""

    def __init__(self, urls: dict[str, str], *, timeout: float, connect_timeout: float) -> None:
        self.urls = {name: url.rstrip("/") for name, url in urls.items()}
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=timeout)
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, service: str) -> aiohttp.ClientSession:
        session = self._sessions.get(service)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30, ttl_dns_cache=300)
            session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
            self._sessions[service] = session
        return session

    async def aclose(self) -> None:
        await asyncio.gather(*(s.close() for s in self._sessions.values()), return_exceptions=True)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class FrontDoor:
    """Everything under `/v1/` and `/s/` passes here; other paths (health, docs) go straight to the app."""

    def __init__(self, app: ASGIApp, *, fastapi_app: Any) -> None:
        self.app = app
        self.state = fastapi_app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path.startswith("/v1/") or path.startswith("/s/")):
            await self.app(scope, receive, send)
            return
        try:
            await self._handle(scope, receive, send, path)
        except DomainError as exc:
            response = problem_response(exc.status, exc.instance_code, exc.detail, headers=exc.headers, **exc.extra)
            await response(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        method: str = scope["method"]
        if path.startswith("/s/"):
            matched = match_route(path)
            assert matched is not None
            await self._forward(scope, receive, send, matched[0].service, path, None)
            return
        authenticator: Authenticator = self.state.authenticator
        principal = await authenticator.authenticate(_header(scope, b"authorization"))
        if principal.kind != "admin":
            limiter: RateLimiter = (
                self.state.customer_limiter if principal.kind == "customer" else self.state.partner_limiter
            )
            wait = limiter.acquire(principal.rate_key)
            if wait:
                raise TooManyRequests("Rate limit exceeded; retry later.", retry_after=RateLimiter.retry_after(wait))
        if path == "/v1/me" or path.startswith("/v1/me/"):
            if principal.kind != "customer":
                raise DomainError("/v1/me is for customer tokens; use /v1/customers/{id}.", code="not_a_customer")
            path = f"/v1/customers/{principal.id}" + path[len("/v1/me") :]
        scope.setdefault("state", {})["principal"] = principal
        scope["state"]["caller_key"] = principal.rate_key
        matched = match_route(path)
        if matched is not None:
            route, found = matched
            authorize(principal, route, found, method)
            await self._forward(scope, receive, send, route.service, path, principal)
            return
        own = match_route(path, GATEWAY_ROUTES)
        if own is not None:
            authorize(principal, own[0], own[1], method)
        if path != scope["path"]:
            scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, service: str, path: str, principal: Principal | None
    ) -> None:
        upstreams: Upstreams = self.state.upstreams
        scope["state"]["route_label"] = f"proxy:{service}"
        url = upstreams.urls[service] + path
        query = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        headers: list[tuple[str, str]] = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in STRIPPED_REQUEST_HEADERS
        ]
        headers.append((INTERNAL_TOKEN_HEADER, self.state.settings.internal_token))
        headers.append(("X-Request-ID", scope["state"]["request_id"]))
        if principal is not None:
            headers.append(("X-Caller-Kind", principal.kind))
            headers.append(("X-Caller-Id", principal.id))
            headers.append(("X-Caller-Scopes", " ".join(sorted(principal.scopes))))
        else:
            headers.append(("X-Caller-Kind", "public"))
        client = scope.get("client")
        if client:
            headers.append(("X-Forwarded-For", client[0]))

        body: bytes | AsyncIterator[bytes]
        length = _header(scope, b"content-length")
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") and not length:
            body = b""
        elif length is not None and length.isdigit() and int(length) <= SMALL_BODY:
            body = await _read_body(receive)
        else:
            body = _stream_body(receive)

        # A pooled connection the service closed just as we reused it fails before anything reached the service:
        # a request that can be sent again safely (idempotent method or Idempotency-Key, body in memory) is.
        replayable = isinstance(body, bytes) and (
            scope["method"] in REPLAYABLE_METHODS or _header(scope, b"idempotency-key") is not None
        )
        attempts = 2 if replayable else 1
        for attempt in range(1, attempts + 1):
            try:
                await self._exchange(upstreams, service, scope, send, url, headers, body)
                return
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == attempts or scope["state"].get("response_started"):
                    await self._unavailable(scope, receive, send, service, exc)
                    return
                log.info("gateway.upstream_retry", service=service, error=type(exc).__name__)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError, TimeoutError) as exc:
                await self._unavailable(scope, receive, send, service, exc)
                return

    async def _exchange(
        self,
        upstreams: Upstreams,
        service: str,
        scope: Scope,
        send: Send,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes],
    ) -> None:
        async with upstreams.session(service).request(
            scope["method"], url, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            response_headers = [
                (k.lower(), v) for k, v in upstream.raw_headers if k.lower() not in STRIPPED_RESPONSE_HEADERS
            ]
            declared = upstream.headers.get("Content-Length")
            if declared is not None and int(declared) <= SMALL_BODY:
                payload = await upstream.read()
                response_headers.append((b"content-length", str(len(payload)).encode()))
                scope["state"]["response_started"] = True
                await send({"type": "http.response.start", "status": upstream.status, "headers": response_headers})
                await send({"type": "http.response.body", "body": payload})
                return
            scope["state"]["response_started"] = True
            await send({"type": "http.response.start", "status": upstream.status, "headers": response_headers})
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send, service: str, exc: BaseException) -> None:
        timed_out = isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError))
        log.warning("gateway.upstream_failed", service=service, error=type(exc).__name__, timed_out=timed_out)
        response = (
            problem_response(504, "upstream_timeout", f"The {service} service did not answer in time.", service=service)
            if timed_out
            else problem_response(
                503,
                "service_unavailable",
                f"The {service} service is unavailable.",
                service=service,
                headers={"Retry-After": "1"},
            )
        )
        await response(scope, receive, _unless_started(send))


def _unless_started(send: Send) -> Send:
    """After a response has started, an error can only cut it short; a second start would be a protocol error."""

    async def guarded(message: Message) -> None:
        with contextlib.suppress(RuntimeError):
            await send(message)

    return guarded


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _stream_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
