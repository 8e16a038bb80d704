"""`kit.background.stop_tasks`, what a service runs on shutdown: a background loop whose cancellation was swallowed
once (a cancellation racing a timeout inside a library call) is cancelled again, so the process can exit."""

from __future__ import annotations

import asyncio

from kit.background import stop_tasks


async def test_a_loop_that_swallowed_a_cancellation_is_cancelled_again() -> None:
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what a library racing its own timeout may do

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.05)
    async with asyncio.timeout(10):  # cancelled once only, the loop would run on and the shutdown never end
        await stop_tasks([task], wait_seconds=0.2)
    assert swallowed == 1
    assert task.done() and task.cancelled()
