"""Per-caller rate limits: a token bucket per caller, refilled continuously.

A bucket holds one minute's allowance, so a caller may burst up to its per-minute limit and then runs at
the steady rate. Buckets live in the gateway process: with several gateway replicas each enforces the
limit on its own share of the traffic.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

__all__ = ["RateLimiter"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float:
        """Take one request's token; return 0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    @staticmethod
    def retry_after(wait_seconds: float) -> int:
        return max(1, math.ceil(wait_seconds))
