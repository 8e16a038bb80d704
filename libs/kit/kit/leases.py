"""Work taken from a queue table: claimed under a lease, retried after a backoff.

Every worker that drains rows of a table (the outbox relay, webhook delivery, survey mail, reward issuing) does
it the same way:

1. claim a batch of due rows in one short transaction (:func:`claim_due`: `FOR UPDATE SKIP LOCKED`, so replicas
   share the work; the claim moves each row's `next_attempt_at` one lease ahead, so a crashed worker's rows are
   due again when the lease runs out: delivery is at least once);
2. commit, then work without holding a transaction (stop starting new work at :meth:`Lease.deadline`, well
   before the lease ends, so no second worker can take a row still in hand);
3. record each outcome: done, or due again after :meth:`Backoff.delay`.

:class:`Backoff` is the platform's one retry formula: exponential, capped, with full jitter (a random wait
between zero and the exponential ceiling), so the retries of one outage spread over the whole window instead
of arriving together.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from kit.lease_repository import DueRows, claim_due

__all__ = ["Backoff", "DueRows", "Lease", "claim_due"]

# 2**62 seconds is far past any cap: the exponent stops growing there instead of overflowing a float
_MAX_EXPONENT = 62


@dataclass(frozen=True)
class Backoff:
    """Full jitter: after the n-th failed attempt, a random wait in [0, min(max_seconds, base_seconds * 2^n)]: on
    average `base_seconds` before the first retry, doubling with each attempt until the cap."""

    base_seconds: float
    max_seconds: float

    def ceiling(self, attempts: int) -> float:
        return min(self.max_seconds, self.base_seconds * 2 ** min(max(0, attempts), _MAX_EXPONENT))

    def delay(self, attempts: int) -> float:
        """The wait before the next attempt, `attempts` being how many were made (1 after the first failure)."""
        return random.uniform(0, self.ceiling(attempts))


@dataclass(frozen=True)
class Lease:
    """How long a claim holds its rows, and until when its worker may still start on one of them."""

    seconds: float
    # the share of the lease in which new work may start: the rest is margin for the work already started
    working_share: float = 0.5

    def deadline(self) -> float:
        """A `time.monotonic()` instant, taken when the claim committed: start nothing new after it."""
        return time.monotonic() + self.seconds * self.working_share
