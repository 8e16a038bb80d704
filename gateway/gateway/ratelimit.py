"""Token buckets keyed by caller or client address, refilled continuously, in bounded memory.

A bucket holds one minute's allowance, so a key may burst up to its per-minute limit and then runs at the
steady rate. At most `max_keys` buckets are kept: past that the least recently used one is dropped, which
can only give that (idle) key a fresh budget; nobody else's limit is ever reset. Buckets live in the
gateway process: with several gateway replicas each enforces the limit on its own share of the traffic.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["RateLimiter", "retry_after"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


def retry_after(wait_seconds: float) -> int:
    return max(1, math.ceil(wait_seconds))


class RateLimiter:
    def __init__(self, per_minute: int, *, max_keys: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket

    def acquire(self, key: str) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        bucket = self._bucket(key, time.monotonic())
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def peek(self, key: str) -> float:
        """Like :meth:`acquire` without taking a token: 0 while the key has one left."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.capacity, bucket.tokens + (time.monotonic() - bucket.updated) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)
