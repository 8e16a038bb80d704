"""What the coupon domain needs besides the database, made once per process by `create_app`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from coupon.guards import FormatCache, GuessThrottle
from coupon.settings import CouponSettings


@dataclass
class CouponRuntime:
    settings: CouponSettings
    throttle: GuessThrottle
    formats: FormatCache
    wake_jobs: Callable[[], Awaitable[None]]
