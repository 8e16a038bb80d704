"""Calling another service over HTTP: one pooled aiohttp session per upstream, shared by every call a process
makes to that service (the gateway's proxy, its overview, its console, its calls to the services' internal
routes, the outbox relay).

aiohttp rather than httpx: measured in the same `make bench` run, it costs a fraction of httpx's CPU per proxied
request on these machines (docs/benchmarks.md). The proxy streams through :meth:`Upstreams.session` and
:meth:`Upstreams.slot` itself; everything else calls :meth:`Upstreams.call`, which forwards the request id and the
internal token and answers an :class:`Answer` read whole, or raises :class:`UpstreamError` when the service
could not be reached or did not answer in time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from kit.auth import INTERNAL_TOKEN_HEADER
from kit.errors import ServiceUnavailable
from kit.json import dumps, loads
from kit.logging import request_id_var

__all__ = ["Answer", "UpstreamError", "Upstreams"]


class UpstreamError(Exception):
    """The service could not be reached, or did not answer in time."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON (`ValueError` when it is not)."""
        return loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Upstreams:
    """One pooled aiohttp session per service, and a bound on the requests in flight to each."""

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        timeout: float,
        connect_timeout: float,
        internal_token: str | None = None,
        bulk_timeout: float | None = None,
        max_concurrency: int = 256,
        queue_seconds: float = 5.0,
    ) -> None:
        self.urls = {name: url.rstrip("/") for name, url in urls.items()}
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=timeout)
        self.bulk_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=bulk_timeout or timeout
        )
        self.connect_timeout = connect_timeout
        self.internal_token = internal_token
        self.max_concurrency = max_concurrency
        self.queue_seconds = queue_seconds
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._slots = {name: asyncio.Semaphore(max_concurrency) for name in self.urls}

    @contextlib.asynccontextmanager
    async def slot(self, service: str) -> AsyncIterator[None]:
        """At most `max_concurrency` requests in flight to one service; a request that cannot get a slot within
        `queue_seconds` is refused (503), so a slow service holds a bounded number of callers, never all."""
        slots = self._slots[service]
        try:
            if slots.locked():
                await asyncio.wait_for(slots.acquire(), self.queue_seconds)
            else:
                # a free slot is taken at once: wait_for would cost a task per request for nothing
                await slots.acquire()
        except TimeoutError:
            raise ServiceUnavailable(
                f"The {service} service is saturated; retry shortly.",
                code="upstream_saturated",
                headers={"Retry-After": "1"},
                service=service,
            ) from None
        try:
            yield
        finally:
            slots.release()

    def session(self, service: str) -> aiohttp.ClientSession:
        session = self._sessions.get(service)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_concurrency, keepalive_timeout=30, ttl_dns_cache=300)
            # No cookie jar: a cookie one caller's answer set must never ride along on another caller's request.
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._sessions[service] = session
        return session

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """One request to `service` with the internal token and the request id, its answer read whole."""
        sent = {"Accept-Encoding": "identity", **(headers or {})}  # the session does not decompress
        if self.internal_token is not None:
            sent[INTERNAL_TOKEN_HEADER] = self.internal_token
        request_id = request_id_var.get()
        if request_id:
            sent.setdefault("X-Request-ID", request_id)
        if json is not None:
            body = dumps(json)
            sent.setdefault("Content-Type", "application/json")
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = aiohttp.ClientTimeout(total=timeout, sock_connect=min(self.connect_timeout, timeout))
        try:
            async with (
                self.slot(service),
                self.session(service).request(
                    method, self.urls[service] + path, data=body, headers=sent, **extra
                ) as response,
            ):
                return Answer(response.status, await response.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamError(f"{service}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await asyncio.gather(*(s.close() for s in self._sessions.values()), return_exceptions=True)
