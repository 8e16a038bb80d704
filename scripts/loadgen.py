"""The load generator behind scripts.benchlib.run_load (aiohttp; runs as its own process).

Closed loop by default (`concurrency` clients, each sending as soon as its last request answered); with `rate`
set, open loop: requests start at that fixed rate whatever the answers, so a slow server shows as latency
rather than as fewer requests. It prints `start` and `stop` lines when the measured window opens and closes
(benchlib reads the platform's CPU time at those moments), then the result as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp


async def generate(spec: dict[str, Any]) -> dict[str, Any]:
    requests: list[dict[str, Any]] = spec["requests"]
    ok = set(spec["ok"])
    cycle: bool = spec["cycle"]
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors = 0
    index = 0
    start = time.perf_counter()
    measure_from = start + spec["warmup"]
    stop_at = measure_from + spec["duration"]
    measured_requests = 0

    marks: list[str] = []

    def mark(what: str) -> None:
        if what not in marks:
            marks.append(what)
            print(what, flush=True)

    async def mark_window() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        mark("start")
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        mark("stop")

    marker = asyncio.create_task(mark_window())
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def client() -> None:
            nonlocal index, errors, measured_requests
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                if index >= len(requests):
                    if not cycle:
                        return
                    index = 0
                request = requests[index]
                index += 1
                await send(request, time.perf_counter())

        async def send(request: dict[str, Any], sent: float) -> None:
            nonlocal errors, measured_requests
            status: int | str
            try:
                async with session.request(
                    request["method"], request["url"], headers=request.get("headers"), json=request.get("json")
                ) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            done = time.perf_counter()
            if sent >= measure_from and done <= stop_at:
                measured_requests += 1
                latencies.append(done - sent)
                statuses[str(status)] += 1
                if status not in ok:
                    errors += 1

        async def open_loop(rate: float) -> None:
            """Request n starts at start + n / rate; latency counts from that planned moment, so a server that
            falls behind is charged for the wait it caused (no coordinated omission)."""
            nonlocal index
            in_flight: set[asyncio.Task[None]] = set()
            n = 0
            while True:
                planned = start + n / rate
                if planned >= stop_at:
                    break
                if index >= len(requests):
                    if not cycle:
                        break
                    index = 0
                delay = planned - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(send(requests[index], planned))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                index += 1
                n += 1
            if in_flight:
                await asyncio.wait(in_flight)

        if spec.get("rate"):
            await open_loop(float(spec["rate"]))
        else:
            await asyncio.gather(*(client() for _ in range(spec["concurrency"])))
    end = min(time.perf_counter(), stop_at)
    # the requests may run out before the window closes (cycle off): the window closes with them
    marker.cancel()
    mark("start")
    mark("stop")
    seconds = max(1e-9, end - measure_from)
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "requests": measured_requests,
        "errors": errors,
        "seconds": seconds,
        "rps": measured_requests / seconds,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "statuses": dict(statuses),
    }


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(generate(spec))))


if __name__ == "__main__":
    main()
