"""Guards in front of every code lookup: the check character against the known code formats, the throttle on
failed guesses, and the arithmetic that ties the throttle to the guessability rule.

The throttle counts failed guesses (an unknown code, or a wrong check character) per (caller, customer) and per
caller. What each count does:

- per (caller, customer), `COUPON_GUESS_LIMIT` in `COUPON_GUESS_WINDOW_SECONDS`: past it, that customer's further
  failures through that caller are answered 429 instead of 404. A code that exists is still looked up and served:
  one customer's typos never lock out another customer of the same partner key, nor the right code.
- per caller, `COUPON_GUESS_CALLER_LIMIT` in the same window: past it, *every* validation and redemption by that
  caller is 429 before any lookup, existing codes included. This is the deliberate exception: if an existing code
  were still served there, a guesser that ignores 429s would lose nothing, and the throttle would bound nothing.
  The ceiling is what bounds guessing, so it is what the guessability rule is calibrated against
  (:func:`guesses_per_caller_year`).

A customer token counts against the principal that minted it (`X-Caller-Issuer`), so a partner that mints a
token per guess gains no budget. :class:`LocalGuessThrottle` keeps the counts in the process's memory (with N
replicas, a caller gets N times the ceiling; docs/operations.md shows what that costs); with REDIS_URL,
:class:`SharedGuessThrottle` keeps them in Redis, one budget for every replica, falling back on the local one.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from coupon.code_format import CodeFormat
from coupon.repositories import campaigns as campaign_rows
from kit.errors import TooManyRequests
from kit.shared_state import KEY_PREFIX, SharedState

__all__ = ["FormatCache", "GuessThrottle", "LocalGuessThrottle", "SharedGuessThrottle", "guesses_per_caller_year"]

SECONDS_PER_YEAR = 365 * 24 * 3600


def guesses_per_caller_year(caller_limit: int, window_seconds: int) -> int:
    """The most failed guesses one caller can make in a year against one replica's throttle."""
    return caller_limit * (SECONDS_PER_YEAR // window_seconds)


class GuessThrottle(Protocol):
    async def check_caller(self, caller: str) -> None:
        """Before any lookup: 429 once the caller is past its ceiling."""

    async def failed(self, caller: str, customer: str) -> None:
        """Count one failed guess; 429 (the answer to this request) once the pair is past its limit."""

    def prune(self) -> None:
        """Forget what left the window (memory)."""


def _throttled(scope: str, whose: str, then: str, limit: int, window: float, wait: float) -> TooManyRequests:
    return TooManyRequests(
        f"Too many failed coupon codes {whose}: at most {limit} unknown or mistyped codes in {int(window)} seconds"
        + then,
        code="coupon_guess_throttled",
        retry_after=int(wait) + 1,
        limit=limit,
        window_seconds=int(window),
        scope=scope,
    )


def caller_throttled(caller_limit: int, window: float, wait: float) -> TooManyRequests:
    then = ", across all its customers; every coupon call waits until then."
    return _throttled("caller", "from this caller", then, caller_limit, window, wait)


def pair_throttled(limit: int, window: float, wait: float) -> TooManyRequests:
    then = "; a valid code is still accepted."
    return _throttled("customer", "for this customer", then, limit, window, wait)


class _Windows:
    """Failure times per key in a sliding window, at most `limit` kept per key (more cannot matter)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def recent(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def full(self, key: str, now: float) -> float | None:
        """Seconds until the oldest failure leaves the window when `key` is at its limit, else None."""
        failures = self.recent(key, now)
        if failures is None or len(failures) < self.limit:
            return None
        return failures[0] + self.window - now

    def add(self, key: str, now: float) -> None:
        failures = self.recent(key, now)
        if failures is None:
            failures = self._failures[key] = deque(maxlen=self.limit)
        failures.append(now)

    def prune(self, now: float) -> None:
        for key in list(self._failures):
            self.recent(key, now)

    def __len__(self) -> int:
        return len(self._failures)


class LocalGuessThrottle:
    """:class:`GuessThrottle` in this process's memory."""

    def __init__(
        self, limit: int, caller_limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.caller_limit = caller_limit
        self.window = window_seconds
        self.clock = clock
        self._pairs = _Windows(limit, window_seconds)
        self._callers = _Windows(caller_limit, window_seconds)

    def _caller_refusal(self, caller: str, now: float) -> TooManyRequests | None:
        wait = self._callers.full(caller, now)
        return None if wait is None else caller_throttled(self.caller_limit, self.window, wait)

    async def check_caller(self, caller: str) -> None:
        refusal = self._caller_refusal(caller, self.clock())
        if refusal is not None:
            raise refusal

    async def failed(self, caller: str, customer: str) -> None:
        now = self.clock()
        pair = f"{caller}\x00{customer}"
        already_full = self._pairs.full(pair, now) is not None
        self._pairs.add(pair, now)
        self._callers.add(caller, now)
        if already_full:
            failures = self._pairs.recent(pair, now)
            assert failures is not None
            raise pair_throttled(self.limit, self.window, failures[0] + self.window - now)

    def prune(self) -> None:
        now = self.clock()
        self._pairs.prune(now)
        self._callers.prune(now)


# Sliding windows in Redis, with the semantics of _Windows: a sorted set of failure times per key, at most `limit`
# newest kept; "full" answers the seconds until the oldest kept leaves the window, -1 when not full.
_FAILED = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local window = tonumber(ARGV[1])
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3])}
local waits = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  waits[i] = -1
  if redis.call('ZCARD', key) >= limits[i] then
    waits[i] = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) + window - now
  end
  if ARGV[4] == '1' then
    redis.call('ZADD', key, now, ARGV[5])
    redis.call('ZREMRANGEBYRANK', key, 0, -(limits[i] + 1))
    redis.call('PEXPIRE', key, math.ceil(window * 1000) + 1000)
  end
end
return {tostring(waits[1]), tostring(waits[2] or -1)}
"""


class SharedGuessThrottle:
    """:class:`GuessThrottle` in Redis (REDIS_URL), one budget for all of coupon's replicas; while Redis does not
    answer, the process's own :class:`LocalGuessThrottle` does (kit.shared_state)."""

    def __init__(self, shared: SharedState, local: LocalGuessThrottle) -> None:
        self.shared = shared
        self.local = local
        self._script = shared.script(_FAILED)

    async def _run(self, keys: list[str], limits: tuple[int, int], record: bool) -> list[float] | None:
        if self._script is None:
            return None
        args = [str(self.local.window), str(limits[0]), str(limits[1]), "1" if record else "0", uuid.uuid4().hex]
        full = [f"{KEY_PREFIX}guess:{key}" for key in keys]
        waits = await self.shared.run("coupon_guesses", lambda r: self._script(keys=full, args=args, client=r))
        return None if waits is None else [float(w) for w in waits]

    async def check_caller(self, caller: str) -> None:
        waits = await self._run([f"caller:{caller}"], (self.local.caller_limit, 0), record=False)
        if waits is None:
            await self.local.check_caller(caller)
        elif waits[0] >= 0:
            raise caller_throttled(self.local.caller_limit, self.local.window, waits[0])

    async def failed(self, caller: str, customer: str) -> None:
        keys = [f"pair:{caller}\x00{customer}", f"caller:{caller}"]
        waits = await self._run(keys, (self.local.limit, self.local.caller_limit), record=True)
        if waits is None:
            await self.local.failed(caller, customer)
        elif waits[0] >= 0:
            raise pair_throttled(self.local.limit, self.local.window, waits[0])

    def prune(self) -> None:
        self.local.prune()


class FormatCache:
    """The code formats (prefix, length, charset) of all campaigns, to refuse a mistyped code before any
    lookup. Reloaded at most once a second when a code matches none (a campaign created by another replica)."""

    RELOAD_SECONDS = 1.0

    def __init__(self) -> None:
        self._formats: frozenset[CodeFormat] = frozenset()
        self._any_imported = False
        self._loaded_at: float | None = None

    def add(self, fmt: CodeFormat) -> None:
        self._formats = self._formats | {fmt}

    def note_imported(self) -> None:
        """This process imported codes: look them up at once (other replicas see them at their next reload)."""
        self._any_imported = True

    def _matches(self, code: str) -> bool:
        return any(fmt.accepts(code) for fmt in self._formats)

    async def _reload(self, session: AsyncSession) -> None:
        self._formats, self._any_imported = await campaign_rows.code_formats(session)
        self._loaded_at = time.monotonic()

    async def accepts(self, session: AsyncSession, code: str) -> bool:
        """Whether a code may exist: it fits a generated format, or imported codes (of any spelling) exist, and
        then only the lookup can tell (a failed one is still a throttled guess)."""
        if self._matches(code):
            return True
        if self._loaded_at is None or time.monotonic() - self._loaded_at >= self.RELOAD_SECONDS:
            await self._reload(session)
            return self._matches(code) or self._any_imported
        return self._any_imported

    @property
    def formats(self) -> Iterable[CodeFormat]:
        return self._formats
