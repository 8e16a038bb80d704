"""The delivery engine: sends each pending delivery to its endpoint, signed, and keeps the log.

- Claims due deliveries with `FOR UPDATE SKIP LOCKED` and a lease, so any number of gateway replicas share the
  work and a crashed one's claims come back after the lease (at least once).
- At most `per_endpoint` requests in flight per endpoint, and claims are taken per endpoint within that
  budget: an endpoint that hangs for its whole timeout (10 s) holds only its own slots, never another's.
- Every attempt is logged (status, latency, response excerpt); results are written in batches.
- Failures retry after the kit's backoff (`kit.leases.Backoff`: exponential, full jitter) until `retry_window`
  after the delivery was created (or re-driven), then the delivery is `failed`. The `webhook-id` and body are
  the same on every attempt; the timestamp and signature are those of the attempt.
- An endpoint failing without a single success for `disable_after` is disabled (`active` false, with the
  reason and time shown on the endpoint), and its pending deliveries are marked failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from prometheus_client import Counter, Histogram

from gateway.webhooks import delivery_repository as repo
from gateway.webhooks.delivery_repository import Outcome
from gateway.webhooks.signing import signature_header
from gateway.webhooks.ssrf import BlockedAddress, GuardedResolver, check_address, literal_address
from kit.db import Database
from kit.leases import Backoff

__all__ = ["WebhookDispatcher"]

log = structlog.get_logger("gateway.webhooks")
ATTEMPTS = Counter("webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"])
DISABLED = Counter("webhook_endpoints_disabled_total", "Endpoints disabled after failing for too long")
LATENCY = Histogram(
    "webhook_attempt_seconds", "Webhook attempt latency", buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
)
EXCERPT_BYTES = 1024
USER_AGENT = "Reciprocity-Webhooks/1.0"


class WebhookDispatcher:
    """One per gateway process; `run` is its loop (a kit periodic job restarts it if it ever fails)."""

    def __init__(
        self,
        database: Database,
        *,
        allow_private: bool,
        timeout_seconds: float = 10.0,
        per_endpoint: int = 16,
        max_in_flight: int = 512,
        poll_seconds: float = 0.25,
        retry_window: timedelta = timedelta(hours=24),
        backoff_base_seconds: float = 5.0,
        backoff_max_seconds: float = 3600.0,
        disable_after: timedelta = timedelta(days=5),
        batch_size: int = 500,
    ) -> None:
        self.database = database
        self.allow_private = allow_private
        self.timeout_seconds = timeout_seconds
        self.per_endpoint = per_endpoint
        self.max_in_flight = max_in_flight
        self.poll_seconds = poll_seconds
        self.retry_window = retry_window
        self.backoff = Backoff(backoff_base_seconds, backoff_max_seconds)
        self.disable_after = disable_after
        self.batch_size = batch_size
        self.lease_seconds = max(60.0, timeout_seconds * 3)
        self._http: aiohttp.ClientSession | None = None
        self._in_flight: dict[uuid.UUID, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: list[Outcome] = []
        self._wakeup = asyncio.Event()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(
                limit=0,  # bounded by the dispatcher's own budgets
                limit_per_host=self.per_endpoint,
                resolver=GuardedResolver(self.allow_private),
                use_dns_cache=False,  # every new connection resolves, and is checked, again
                keepalive_timeout=30,
            )
            self._http = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
                headers={"User-Agent": USER_AGENT},
                auto_decompress=False,
            )
        return self._http

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        try:
            while True:
                await self.step()
                if not self._outcomes:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self.poll_seconds)
                    # let the other attempts finishing about now join this batch of results
                    await asyncio.sleep(0.005)
                self._wakeup.clear()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def step(self) -> int:
        """Record finished attempts, then claim and start what is due within the budgets; returns the claims."""
        await self._record()
        free = self.max_in_flight - len(self._tasks)
        if free <= 0:
            return 0
        busy = [(endpoint, count) for endpoint, count in self._in_flight.items() if count > 0]
        async with self.database.transaction() as session:
            rows = await repo.claim(
                session, self.per_endpoint, busy, batch=min(free, self.batch_size), lease_seconds=self.lease_seconds
            )
        for row in rows:
            self._in_flight[row.endpoint_id] = self._in_flight.get(row.endpoint_id, 0) + 1
            task = asyncio.create_task(self._attempt(row))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def drain(self, timeout: float = 30.0) -> None:
        """Until nothing is due or in flight (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            claimed = await self.step()
            if not claimed and not self._tasks and not self._outcomes:
                return
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=0.05, return_when=asyncio.FIRST_COMPLETED)

    async def _attempt(self, row: Any) -> None:
        attempted_at = datetime.now(UTC)
        started = time.perf_counter()
        status: int | None = None
        excerpt: str | None = None
        error: str | None = None
        body: bytes = bytes(row.body)
        timestamp = int(time.time())
        secrets = [row.secret] + ([row.previous_secret] if row.previous_secret else [])
        headers = {
            "Content-Type": "application/json",
            "webhook-id": row.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, row.message_id, timestamp, body),
        }
        try:
            host = urlsplit(row.url).hostname or ""
            literal = literal_address(host)
            if literal is not None:  # aiohttp connects to an IP literal without asking the resolver
                check_address(host, literal, self.allow_private)
            async with self._session().post(row.url, data=body, headers=headers, allow_redirects=False) as response:
                status = response.status
                excerpt = (await response.content.read(EXCERPT_BYTES)).decode("utf-8", "replace") or None
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except BlockedAddress as exc:
            error = f"blocked: {exc}"
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error if isinstance(exc.os_error, BlockedAddress) else exc
            error = f"{'blocked' if cause is not exc else type(exc).__name__}: {cause}"[:500]
        except TimeoutError:
            error = f"timeout after {self.timeout_seconds:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            elapsed = time.perf_counter() - started
            self._in_flight[row.endpoint_id] -= 1
            if not self._in_flight[row.endpoint_id]:
                del self._in_flight[row.endpoint_id]
        LATENCY.observe(elapsed)
        outcome = Outcome(
            row.id, row.endpoint_id, row.attempts, attempted_at, status, int(elapsed * 1000), excerpt, error
        )
        ATTEMPTS.labels("ok" if outcome.ok else "failed").inc()
        self._outcomes.append(outcome)
        self._wakeup.set()

    async def _record(self) -> None:
        if not self._outcomes:
            return
        outcomes, self._outcomes = self._outcomes, []
        succeeded = {o.endpoint_id for o in outcomes if o.ok}
        failed = {o.endpoint_id for o in outcomes if not o.ok} - succeeded
        delays = [0.0 if o.ok else self.backoff.delay(o.previous_attempts + 1) for o in outcomes]
        async with self.database.transaction() as session:
            for delivery_id in await repo.record(session, outcomes, delays, self.retry_window):
                log.warning("webhooks.delivery_failed", delivery_id=delivery_id)
            if succeeded:
                await repo.recovered(session, succeeded)
            if failed:
                await repo.failing(session, failed)
                disabled = await repo.disable_failing_since(session, failed, self.disable_after)
                if disabled:
                    await repo.abandon(session, [row.id for row in disabled])
                    for row in disabled:
                        DISABLED.inc()
                        log.error(
                            "webhooks.endpoint_disabled", endpoint_id=str(row.id), url=row.url, since=row.failing_since
                        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
