"""What the coupon domain needs besides the database, made once per process by `create_app` (which takes the
values from the settings: the domain never reads settings itself)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from coupon.guards import FormatCache, GuessThrottle


@dataclass
class CouponRuntime:
    throttle: GuessThrottle
    formats: FormatCache
    wake_jobs: Callable[[], Awaitable[None]]
    min_guess_bits: int  # a code format must leave at least this many bits to guess (COUPON_MIN_GUESS_BITS)
    sync_codes_max: int  # more codes than this are made by a background job (202)
    recent_purchase_hours: float  # a purchase older than this wakes no surprise rule
