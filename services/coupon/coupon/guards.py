"""Guards in front of every code lookup: the check character against the known code formats, and the
per-caller throttle on failed guesses.

Both are in-process state (one instance per process): with N replicas a caller gets N times the guess
budget. The throttle does not need to be exact to defeat guessing (a 2^40 code space per live code makes
even a thousand times the budget useless); it needs to be cheap on the hot path.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.codes import CodeFormat
from kit.errors import TooManyRequests

__all__ = ["FormatCache", "GuessThrottle"]


class GuessThrottle:
    """At most `limit` failed guesses per caller in a sliding window of `window_seconds`."""

    def __init__(self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, caller: str, now: float) -> deque[float] | None:
        failures = self._failures.get(caller)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[caller]
            return None
        return failures

    def check(self, caller: str) -> None:
        now = self.clock()
        failures = self._recent(caller, now)
        if failures is not None and len(failures) >= self.limit:
            retry_after = int(failures[0] + self.window - now) + 1
            raise TooManyRequests(
                f"Too many failed coupon codes: at most {self.limit} unknown or mistyped codes per caller "
                f"in {int(self.window)} seconds.",
                code="coupon_guess_throttled",
                retry_after=retry_after,
                limit=self.limit,
                window_seconds=int(self.window),
            )

    def fail(self, caller: str) -> None:
        now = self.clock()
        failures = self._recent(caller, now)
        if failures is None:
            failures = self._failures[caller] = deque(maxlen=self.limit)
        failures.append(now)

    def prune(self) -> None:
        now = self.clock()
        for caller in list(self._failures):
            self._recent(caller, now)


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
        rows = await session.execute(text("SELECT DISTINCT code_prefix, code_length, charset FROM campaigns"))
        self._formats = frozenset(CodeFormat(p, n, c) for p, n, c in rows)
        imported = await session.execute(text("SELECT EXISTS (SELECT 1 FROM campaigns WHERE imported > 0)"))
        self._any_imported = bool(imported.scalar())
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
