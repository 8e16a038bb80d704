"""The closed-loop load generator behind scripts.benchlib.run_load (aiohttp; runs as its own process)."""

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
                sent = time.perf_counter()
                try:
                    async with session.request(
                        request["method"], request["url"], headers=request.get("headers"), json=request.get("json")
                    ) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__
                done = time.perf_counter()
                if sent >= measure_from and done <= stop_at:
                    measured_requests += 1
                    latencies.append(done - sent)
                    statuses[str(status)] += 1
                    if status not in ok:
                        errors += 1

        await asyncio.gather(*(client() for _ in range(spec["concurrency"])))
    end = min(time.perf_counter(), stop_at)
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
