"""Request ids, access logs and Prometheus metrics, as one pure-ASGI middleware (cheap on the hot path),
plus the `/healthz`, `/readyz` and `/metrics` endpoints every process serves."""

from __future__ import annotations

import functools
import logging as _stdlib_logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kit.errors import problem_response
from kit.json import ORJSONResponse
from kit.logging import request_id_var

__all__ = ["ReadinessCheck", "RequestContextMiddleware", "health_router", "redacted_path"]

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
log = structlog.get_logger("kit.http")
_access_logger = _stdlib_logging.getLogger("kit.http")

UNINSTRUMENTED = frozenset({"/healthz", "/metrics"})


# Finding a labelled child takes prometheus_client a lock and a tuple of validated strings per request; the route
# templates are few (unmatched paths share one label), so each child is looked up once.
@functools.lru_cache(maxsize=4096)
def _request_counter(method: str, route: str, status: int) -> Any:
    return REQUESTS.labels(method, route, str(status))


@functools.lru_cache(maxsize=4096)
def _latency_histogram(method: str, route: str) -> Any:
    return LATENCY.labels(method, route)


class RequestContextMiddleware:
    """Accept or create `X-Request-ID`, echo it, bind it to every log line, and count the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        encoded_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", encoded_id))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope["path"]
            if path not in UNINSTRUMENTED:
                route = scope.get("route")
                template = getattr(route, "path", None) or scope["state"].get("route_label", "unmatched")
                elapsed = time.perf_counter() - started
                method = scope["method"]
                _request_counter(method, template, status).inc()
                _latency_histogram(method, template).observe(elapsed)
                # Rendering a log line costs more than the rest of this middleware: errors always, the rest at DEBUG.
                if status >= 500 or _access_logger.isEnabledFor(_stdlib_logging.DEBUG):
                    fields = {
                        "method": method,
                        "route": template,
                        "path": redacted_path(path),
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    }
                    if status >= 500:
                        log.warning("http.request", **fields)
                    else:
                        log.debug("http.request", **fields)
            request_id_var.reset(token)


# A segment that looks like a credential (a survey link's token, a long random id) never reaches a log line.
# UUIDs (campaigns, surveys) stay readable.
_SECRET_LOOKING_SEGMENT = re.compile(r"(?<=/)(?![0-9a-fA-F]{8}-[0-9a-fA-F]{4}-)[A-Za-z0-9_-]{20,}(?=/|$)")


def redacted_path(path: str) -> str:
    return _SECRET_LOOKING_SEGMENT.sub("[redacted]", path)


# Raises when the dependency is missing (not ready: 503); may return a note when the process serves on in a
# degraded way (still ready, the note is listed under `degraded`).
ReadinessCheck = Callable[[], Awaitable[str | None]]


def health_router(checks: dict[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["health"], include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> Response:
        return ORJSONResponse({"status": "ok"})

    @router.get("/readyz")
    async def readyz(request: Request) -> Response:
        failing: dict[str, str] = {}
        degraded: dict[str, str] = {}
        for name, check in checks.items():
            try:
                note = await check()
            except Exception as exc:  # any failure means not ready; say which
                failing[name] = f"{type(exc).__name__}: {exc}"[:200]
            else:
                if note:
                    degraded[name] = note
        if failing:
            return problem_response(503, "not_ready", "A dependency is not reachable.", checks=failing)
        body: dict[str, object] = {"status": "ready", "checks": sorted(checks)}
        if degraded:
            body["degraded"] = degraded
        return ORJSONResponse(body)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
