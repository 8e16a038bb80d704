"""Periodic jobs inside a service process (expiry runs, outbox relays, mail senders, retraining).

A job that raises is logged and tried again at its next tick; it never takes the process down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import structlog

__all__ = ["PeriodicJob", "run_periodically", "stop_tasks"]

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


async def stop_tasks(tasks: Collection[asyncio.Task[Any]], rounds: int = 5, wait_seconds: float = 2.0) -> None:
    """Cancel the background tasks and wait for them, cancelling again those still running: a cancellation that
    races a timeout inside a library call (a part fetch's `asyncio.timeout`, a client's connect) can be swallowed,
    and a loop that swallowed it would keep the process from ever exiting."""
    pending = set(tasks)
    for task in pending:
        task.cancel()
    for _ in range(rounds):
        if not pending:
            return
        _, pending = await asyncio.wait(pending, timeout=wait_seconds)
        for task in pending:
            task.cancel()
    if pending:
        log.warning("service.tasks_still_running", tasks=sorted(task.get_name() for task in pending))
