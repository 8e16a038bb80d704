"""State shared by the replicas of a process through Redis (`REDIS_URL`), with each process's own state as the
fallback: rate limits and throttles that hold across replicas, and messages that reach every replica at once
(revocations).

Without `REDIS_URL` nothing here talks to anything: every limiter is the process's own, as `make run` needs.
With it, an operation that fails (Redis down, slow, restarted) is answered by the local fallback at once, and
Redis is not tried again for `retry_seconds`: a request never fails, nor waits long, for Redis. While Redis is
unreachable `/readyz` stays 200 and says so under `degraded`, and `shared_state_up` is 0.

Rate limits are token buckets updated by one Lua script (atomic in Redis, one round trip), with Redis's own
clock, so replicas with skewed clocks agree. Messages use pub/sub: a replica that was cut off from Redis calls
its `on_resubscribed` hooks when it is back (the gateway empties its authentication caches then), since it may
have missed messages meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import orjson
import structlog
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

__all__ = ["LocalLimiter", "SharedRateLimiter", "SharedState"]

log = structlog.get_logger("kit.shared_state")

UP = Gauge("shared_state_up", "1 while Redis (REDIS_URL) answers, 0 while the process falls back on its own state")
FALLBACKS = Counter(
    "shared_state_fallbacks_total",
    "Operations answered by the process's own state, Redis not answering",
    ["operation"],
)
KEY_PREFIX = "reciprocity:"

T = TypeVar("T")
MessageHandler = Callable[[dict[str, Any]], None]

# A token bucket: KEYS[1] the bucket; ARGV capacity, refill per second, 1 to take a token (0 to look only).
# Returns the seconds to wait as a string (Lua numbers come back as integers otherwise), "0" when allowed.
_TOKEN_BUCKET = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local take = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1])
if tokens == nil then
  tokens = capacity
else
  tokens = math.min(capacity, tokens + math.max(0, now - tonumber(bucket[2])) * rate)
end
local wait = 0
if tokens >= 1 then
  if take == 1 then
    tokens = tokens - 1
  end
else
  wait = (1 - tokens) / rate
end
if take == 1 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
end
return tostring(wait)
"""


class SharedState:
    """One per process: the Redis client (or none), its health, and the subscriptions."""

    def __init__(
        self,
        url: str | None,
        *,
        timeout_seconds: float = 0.25,
        retry_seconds: float = 1.0,
    ) -> None:
        self.url = url
        self.retry_seconds = retry_seconds
        self._client: Redis | None = None
        if url:
            self._client = Redis.from_url(
                url,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                # a failed call falls back at once; the next try is after retry_seconds
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        self._down_until = 0.0
        self._last_error: str | None = None
        self._handlers: dict[str, list[MessageHandler]] = {}
        self._on_resubscribed: list[Callable[[], None]] = []
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        UP.set(1 if url else 0)

    @property
    def configured(self) -> bool:
        return self._client is not None

    @property
    def available(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    def _failed(self, operation: str, exc: BaseException) -> None:
        first = self._last_error is None
        self._last_error = f"{type(exc).__name__}: {exc}"[:200]
        self._down_until = time.monotonic() + self.retry_seconds
        UP.set(0)
        if first:
            log.warning("shared_state.unavailable", operation=operation, error=self._last_error)

    def _succeeded(self) -> None:
        if self._last_error is not None:
            log.info("shared_state.available_again")
            self._last_error = None
            UP.set(1)

    async def run(self, operation: str, call: Callable[[Redis], Awaitable[T]]) -> T | None:
        """`call` on Redis, or None when there is no Redis or it failed (the caller falls back)."""
        if self._client is None:
            return None
        if not self.available:
            FALLBACKS.labels(operation).inc()
            return None
        try:
            result = await call(self._client)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(operation, exc)
            FALLBACKS.labels(operation).inc()
            return None
        self._succeeded()
        return result

    def script(self, source: str) -> Any:
        """A Lua script, run by EVALSHA (loaded again by itself after a Redis restart)."""
        if self._client is None:
            return None
        return self._client.register_script(source)

    # -- messages to every replica --------------------------------------------------------------------------
    def subscribe(self, channel: str, handler: MessageHandler) -> None:
        self._handlers.setdefault(KEY_PREFIX + channel, []).append(handler)

    def on_resubscribed(self, hook: Callable[[], None]) -> None:
        """Called when the subscription is back after a break: messages sent meanwhile were missed."""
        self._on_resubscribed.append(hook)

    async def publish(self, channel: str, message: dict[str, Any]) -> bool:
        """True when Redis took the message; False when it could not (the other replicas then learn of the
        change only when their caches expire)."""
        body = orjson.dumps(message)
        return bool(await self.run("publish", lambda r: r.publish(KEY_PREFIX + channel, body)) is not None)

    async def start(self) -> None:
        if self._client is not None and self._handlers:
            self._listener = asyncio.create_task(self._listen(), name="shared_state.listen")

    async def _listen(self) -> None:
        assert self._client is not None
        broken = False
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._handlers)
                if broken:
                    for hook in self._on_resubscribed:
                        hook()
                    broken = False
                self.subscribed.set()
                self._succeeded()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    channel = message["channel"].decode()
                    try:
                        data = orjson.loads(message["data"])
                    except orjson.JSONDecodeError:
                        log.warning("shared_state.bad_message", channel=channel)
                        continue
                    for handler in self._handlers.get(channel, ()):
                        handler(data)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                broken = True
                self.subscribed.clear()
                self._failed("subscribe", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(self.retry_seconds)

    async def ready(self) -> str | None:
        """For `/readyz`: never failing (the process serves on with its own state), a note while degraded."""
        if self._client is None:
            return None
        if not self.available:
            return f"Redis unreachable, limits are per process: {self._last_error}"
        try:
            await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("ping", exc)
            return f"Redis unreachable, limits are per process: {self._last_error}"
        self._succeeded()
        return None

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._client is not None:
            await self._client.aclose()


class LocalLimiter(Protocol):
    def acquire(self, key: str) -> float: ...

    def peek(self, key: str) -> float: ...


class SharedRateLimiter:
    """A token bucket per key (`per_minute` tokens, refilled continuously) in Redis, shared by every replica;
    the process's own limiter answers while Redis does not (or when there is none)."""

    def __init__(self, name: str, per_minute: int, shared: SharedState, local: LocalLimiter) -> None:
        self.name = name
        self.capacity = str(per_minute)
        self.rate = str(per_minute / 60.0)
        self.shared = shared
        self.local = local
        self._script = shared.script(_TOKEN_BUCKET)
        self._prefix = f"{KEY_PREFIX}rate:{name}:"

    async def _shared(self, key: str, take: bool) -> float | None:
        if self._script is None:
            return None
        args = [self.capacity, self.rate, "1" if take else "0"]
        wait = await self.shared.run(
            f"rate:{self.name}", lambda r: self._script(keys=[self._prefix + key], args=args, client=r)
        )
        return None if wait is None else float(wait)

    async def acquire(self, key: str) -> float:
        """Take one token; 0 when allowed, else the seconds until one is available."""
        wait = await self._shared(key, take=True)
        return self.local.acquire(key) if wait is None else wait

    async def peek(self, key: str) -> float:
        wait = await self._shared(key, take=False)
        return self.local.peek(key) if wait is None else wait
