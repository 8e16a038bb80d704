"""The guess throttle on its own, with a clock the test moves: windows slide, refusals say how long to wait."""

from __future__ import annotations

import pytest

from coupon.guards import LocalGuessThrottle, guesses_per_caller_year
from kit.errors import TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_pair_limit_slides_with_the_window() -> None:
    clock = Clock()
    throttle = LocalGuessThrottle(3, 100, 60, clock=clock)
    for _ in range(3):
        await throttle.failed("partner:k", "alice")
        clock.now += 10
    with pytest.raises(TooManyRequests) as refused:
        await throttle.failed("partner:k", "alice")
    # the three latest failures are at 1010, 1020 and 1030: below the limit again once 1010 leaves, at 1070
    assert refused.value.headers["Retry-After"] == "41"
    await throttle.failed("partner:k", "bob")  # another customer of the same caller
    clock.now += 61
    await throttle.failed("partner:k", "alice")  # the window moved on
    await throttle.check_caller("partner:k")


async def test_the_caller_ceiling_holds_across_customers_and_frees_up() -> None:
    clock = Clock()
    throttle = LocalGuessThrottle(3, 5, 60, clock=clock)
    for i in range(5):
        await throttle.failed("partner:k", f"c{i}")
    with pytest.raises(TooManyRequests) as refused:
        await throttle.check_caller("partner:k")
    assert refused.value.extra["scope"] == "caller"
    await throttle.check_caller("partner:other")
    clock.now += 61
    await throttle.check_caller("partner:k")
    throttle.prune()
    assert len(throttle._pairs) == 0 and len(throttle._callers) == 0


def test_the_arithmetic_of_the_defaults() -> None:
    # 200 failures per 10 minutes: 52,560 windows a year
    assert guesses_per_caller_year(200, 600) == 10_512_000
