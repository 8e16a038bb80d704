"""The kit's one backoff: exponential, capped, full jitter."""

from __future__ import annotations

import random

from kit.leases import Backoff


def test_the_wait_is_random_below_a_ceiling_that_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base_seconds=2.0, max_seconds=60.0)
    assert [backoff.ceiling(n) for n in (1, 2, 3, 4, 5, 6)] == [4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    random.seed(7)
    waits = [backoff.delay(3) for _ in range(2000)]
    assert 0 <= min(waits) < 1.0 and 15.0 < max(waits) <= 16.0, "full jitter spreads over the whole window"
    assert 7.0 < sum(waits) / len(waits) < 9.0


def test_a_long_outage_never_overflows() -> None:
    assert Backoff(1.0, 300.0).delay(5000) <= 300.0
