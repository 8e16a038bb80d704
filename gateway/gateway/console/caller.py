"""The console calls the public API's operations as the signed-in key, on the route table's own rules.

Each call is matched against `gateway.routing.ROUTES` and authorised for the session's principal exactly as the
front door would; a service operation then goes to its service with the internal token and the caller's identity
(the same headers the front door sets), so the service's own `requires(...)` checks apply as well. A gateway
operation (experiments, webhooks) runs in this process through the gateway's own route, with the principal
attached as the front door attaches it. A few gateway reads the console draws itself (purchases by week, API keys,
outbox deliveries) are asked with :meth:`Caller.allowed` before the console calls their domain code.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from gateway.principals import Principal
from gateway.routing import authorize, match
from kit.auth import INTERNAL_TOKEN_HEADER
from kit.client import Upstreams
from kit.errors import DomainError

__all__ = ["ApiResult", "Caller"]


@dataclass
class ApiResult:
    status: int
    body: Any = None
    problem: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """What to tell a person: the problem's detail, and each field error."""
        if self.ok:
            return ""
        text = str(self.problem.get("detail") or self.problem.get("title") or f"The service answered {self.status}.")
        errors = self.problem.get("errors") or []
        details = "; ".join(f"{e.get('field', '')}: {e.get('message', '')}".strip(": ") for e in errors[:5])
        return f"{text} {details}".strip()


class Caller:
    def __init__(
        self, principal: Principal, upstreams: Upstreams, internal_token: str, request_id: str, app: Any = None
    ) -> None:
        self.app = app
        self.principal = principal
        self.upstreams = upstreams
        self.internal_token = internal_token
        self.request_id = request_id

    def allowed(self, method: str, path: str) -> bool:
        try:
            authorize(self.principal, match(method, path))
        except DomainError:
            return False
        return True

    def _headers(self) -> dict[str, str]:
        return {
            INTERNAL_TOKEN_HEADER: self.internal_token,
            "X-Request-ID": self.request_id,
            "X-Caller-Kind": self.principal.kind,
            "X-Caller-Id": self.principal.id,
            "X-Caller-Scopes": " ".join(sorted(self.principal.scopes)),
        }

    def _target(self, method: str, path: str) -> str:
        """The owning service, or the refusal the front door would give (as a DomainError)."""
        matched = match(method, path)
        authorize(self.principal, matched)
        return matched.route.target

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
    ) -> ApiResult:
        try:
            service = self._target(method, path)
        except DomainError as exc:
            return ApiResult(exc.status, problem={"detail": exc.detail, "code": exc.instance_code})
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None and v != ""})
        data = orjson.dumps(json) if json is not None else None
        if service == "gateway":
            return await self._own(method, path, query, data)
        url = self.upstreams.urls[service] + path + (f"?{query}" if query else "")
        headers = self._headers()
        if data is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            async with (
                self.upstreams.slot(service),
                self.upstreams.session(service).request(method, url, headers=headers, data=data) as response,
            ):
                payload = await response.read()
        except DomainError as exc:
            return ApiResult(exc.status, problem={"detail": exc.detail})
        except (aiohttp.ClientError, TimeoutError):
            return ApiResult(503, problem={"detail": f"The {service} service is unavailable."})
        body = orjson.loads(payload) if payload and response.content_type.endswith("json") else None
        if 200 <= response.status < 300:
            return ApiResult(response.status, body)
        return ApiResult(response.status, problem=body if isinstance(body, dict) else {})

    async def _own(self, method: str, path: str, query: str, data: bytes | None) -> ApiResult:
        """A gateway operation through its own route, in this process: the app's error handlers turn refusals
        into the same problem documents a caller of the API gets."""
        headers = [(b"host", b"console.internal"), (b"x-request-id", self.request_id.encode())]
        if data is not None:
            headers.append((b"content-type", b"application/json"))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": headers,
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
            "app": self.app,
            "state": {"principal": self.principal, "request_id": self.request_id},
            "starlette.exception_handlers": (self.app.exception_handlers, {}),
        }
        body_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if body_sent:
                return {"type": "http.disconnect"}
            body_sent = True
            return {"type": "http.request", "body": data or b"", "more_body": False}

        status = 500
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        # what FastAPI's own middleware would have provided for the route's dependencies
        async with contextlib.AsyncExitStack() as stack:
            scope["fastapi_middleware_astack"] = stack
            await self.app.router(scope, receive, send)
        payload = b"".join(chunks)
        body = orjson.loads(payload) if payload[:1] in (b"{", b"[") else None
        if 200 <= status < 300:
            return ApiResult(status, body)
        return ApiResult(status, problem=body if isinstance(body, dict) else {})

    async def stream(self, path: str, params: dict[str, str]) -> tuple[int, AsyncIterator[bytes]]:
        """A large GET passed through as it arrives (a campaign's codes as CSV)."""
        service = self._target("GET", path)
        url = self.upstreams.urls[service] + path + "?" + urlencode(params)
        session = self.upstreams.session(service)
        response = await session.get(url, headers=self._headers())

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                response.release()

        if response.status != 200:
            response.release()
        return response.status, chunks()
