"""The gateway's front door as one pure-ASGI layer: authenticate, rate-limit, authorise, then forward to the
owning service or hand over to the gateway's own routes.

Forwarding uses the process's one pooled `aiohttp.ClientSession` per upstream (`kit.client.Upstreams`, shared
with the overview, the console and the gateway's other calls to the services). Bodies stream both ways;
status, headers and problem+json errors pass through unchanged.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.limits import Limits
from gateway.principals import Authenticator, Principal
from gateway.routing import BodyClass, authorize, canonical_path, match
from kit.auth import INTERNAL_TOKEN_HEADER
from kit.client import Upstreams
from kit.errors import (
    DomainError,
    NotFound,
    Unauthorized,
    problem_response,
    unexpected_error_response,
)

if TYPE_CHECKING:
    from gateway.overview import ReadModel

__all__ = ["FrontDoor"]

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
    b"x-caller-issuer",
    b"x-forwarded-for",
    b"content-length",
}
STRIPPED_RESPONSE_HEADERS = HOP_BY_HOP | {b"content-length", b"x-request-id", b"date", b"server"}
SMALL_BODY = 1 << 20
PUBLIC_PAGES = "/s/"
PUBLIC_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}
BROKEN_LINK_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>This link doesn't work</title></head>"
    '<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 3rem auto; padding: 0 1rem">'
    "<h1>This link doesn't work</h1>"
    "<p>Please check that you opened the whole link from your email.</p></body></html>"
)
REPLAYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class FrontDoor:
    """Every HTTP request passes here: canonical path, route table, limits, authentication, authorisation,
    then the owning service or the gateway's own routes (see `gateway.routing`)."""

    def __init__(self, app: ASGIApp, *, fastapi_app: Any) -> None:
        self.app = app
        self.state = fastapi_app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self._handle(scope, receive, send)
        except DomainError as exc:
            response: Response
            if exc.status == 404 and scope["path"].startswith(PUBLIC_PAGES):
                # Only a browser follows an emailed link: a mangled one gets a page a person can read.
                response = HTMLResponse(BROKEN_LINK_PAGE, status_code=404, headers=PUBLIC_PAGE_HEADERS)
            else:
                response = problem_response(exc.status, exc.instance_code, exc.detail, headers=exc.headers, **exc.extra)
            await response(scope, receive, send)
        except Exception as exc:
            state = scope.get("state", {})
            if state.get("own_route") or state.get("response_started"):
                raise  # Starlette's error layer has answered it (the gateway's own routes), or the answer is under way
            await unexpected_error_response(exc)(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        limits: Limits = self.state.limits
        limits.check_headers(scope)
        path = canonical_path(scope.get("raw_path") or scope["path"].encode())
        method: str = scope["method"]
        client_address = _client_address(scope)
        principal: Principal | None = None
        if path == "/v1/me" or path.startswith("/v1/me/"):
            principal = await self._authenticate(scope, client_address)
            if principal.kind != "customer":
                raise DomainError("/v1/me is for customer tokens; use /v1/customers/{id}.", code="not_a_customer")
            path = f"/v1/customers/{principal.id}" + path[len("/v1/me") :]
        matched = match(method, path)
        entry = matched.route
        state = scope.setdefault("state", {})
        state["route_label"] = entry.label
        if entry.access.internal:
            presented = (_header(scope, b"x-internal-token") or "").encode("latin-1")
            if not hmac.compare_digest(presented, self.state.settings.internal_token.encode()):
                raise NotFound("No such resource.")
        elif entry.access.public:
            if entry.target != "gateway":
                await limits.check_public(client_address)
        else:
            if principal is None:
                principal = await self._authenticate(scope, client_address)
            if principal.kind != "admin":
                await limits.check_caller(principal)
            authorize(principal, matched)
            state["principal"] = principal
            state["caller_key"] = principal.rate_key
        receive = await limits.bounded_body(scope, receive, entry.body)
        if entry.target == "gateway":
            state["own_route"] = True
            await self.app({**scope, "path": path, "raw_path": path.encode()}, receive, send)
            return
        bulk = entry.body is BodyClass.BULK
        customer_id = None
        if method not in ("GET", "HEAD"):
            # a customer's own write names them in the path, or (a coupon redeemed with their token) in the token
            customer_id = matched.parameters.get("customer_id") or (
                principal.id if principal is not None and principal.kind == "customer" else None
            )
        if customer_id is None:
            await self._forward(scope, receive, send, entry.target, path, principal, bulk=bulk)
            return
        # the customer's own change shows in their next overview: what was stored before it answered is not
        # shown to them (gateway/overview.py)
        overview: ReadModel = self.state.overview
        overview.writing(customer_id)
        try:
            await self._forward(scope, receive, send, entry.target, path, principal, bulk=bulk)
        finally:
            overview.written(customer_id)

    async def _authenticate(self, scope: Scope, client_address: str) -> Principal:
        """Failed attempts are counted per client address: past the limit, that address is refused before its
        token is even looked at, so guessing tokens costs the guesser, not the database."""
        limits: Limits = self.state.limits
        await limits.check_failed_authentication(client_address)
        authenticator: Authenticator = self.state.authenticator
        try:
            return await authenticator.authenticate(_header(scope, b"authorization"))
        except Unauthorized:
            await limits.record_failed_authentication(client_address)
            raise

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        path: str,
        principal: Principal | None,
        *,
        bulk: bool = False,
    ) -> None:
        upstreams: Upstreams = self.state.upstreams
        timeout = upstreams.bulk_timeout if bulk else upstreams.timeout
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
            if principal.issuer is not None:
                headers.append(("X-Caller-Issuer", principal.issuer))
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
        async with upstreams.slot(service):
            for attempt in range(1, attempts + 1):
                try:
                    await self._exchange(upstreams, service, scope, send, url, headers, body, timeout)
                    return
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    if attempt == attempts or scope["state"].get("response_started"):
                        await self._unavailable(scope, receive, send, service, exc)
                        return
                    log.info("gateway.upstream_retry", service=service, error=type(exc).__name__)
                except (
                    aiohttp.ClientConnectionError,
                    aiohttp.ClientPayloadError,
                    ConnectionError,
                    TimeoutError,
                ) as exc:
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
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        async with upstreams.session(service).request(
            scope["method"], url, headers=headers, data=body, allow_redirects=False, timeout=timeout
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


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
