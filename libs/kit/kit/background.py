"""Periodic jobs inside a service process (expiry runs, outbox relays, mail senders, retraining).

A job that raises is logged and tried again at its next tick; it never takes the process down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

__all__ = ["PeriodicJob", "run_periodically"]

log = structlog.get_logger("kit.background")


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[object]]
    initial_delay_seconds: float = 0.0


async def run_periodically(job: PeriodicJob) -> None:
    await asyncio.sleep(job.initial_delay_seconds)
    while True:
        try:
            await job.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background.job_failed", job=job.name)
        await asyncio.sleep(job.interval_seconds)
