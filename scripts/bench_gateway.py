"""The gateway's hop: the same GET straight to the points service and through the gateway, at 64 clients and at
one; beside them, bare forwarders using httpx and aiohttp, to show what the HTTP client alone costs.

Goal (issue 2): through the gateway at least 75% of direct throughput at 64 clients, at most 1 ms added at p50.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx

from scripts.benchlib import (
    INTERNAL_TOKEN,
    LOAD_HEADERS,
    ROOT,
    fresh_database,
    platform,
    print_table,
    result_row,
    run_load,
)
from tests.support.servers import free_port

DURATION = 8.0


def start_forwarder(kind: str, upstream: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.forwarder", kind, upstream, str(port), INTERNAL_TOKEN], cwd=ROOT
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return process, f"http://127.0.0.1:{port}"


async def bench() -> None:
    async with fresh_database() as database_url, platform(database_url, services=["points"]) as stack:
        async with httpx.AsyncClient(headers=stack.admin_headers) as admin:
            key = (
                await admin.post(
                    stack.url("gateway") + "/v1/api-keys", json={"name": "bench", "scopes": ["points:read"]}
                )
            ).json()["key"]
        path = "/v1/customers/bench-customer/points"
        partner = {"Authorization": f"Bearer {key}"}
        direct = [{"method": "GET", "url": stack.url("points") + path, "headers": stack.internal_headers}]
        gateway = [{"method": "GET", "url": stack.url("gateway") + path, "headers": partner}]

        forwarders = {kind: start_forwarder(kind, stack.url("points")) for kind in ("httpx", "aiohttp")}
        try:
            rows = []
            for clients in (64, 1):
                baseline = run_load(
                    f"direct to the service, {clients} client(s)", direct, concurrency=clients, duration=DURATION
                )
                rows.append(result_row(baseline, baseline))
                ours = run_load(
                    f"through the gateway, {clients} client(s)", gateway, concurrency=clients, duration=DURATION
                )
                rows.append(result_row(ours, baseline))
                for kind, (_, url) in forwarders.items():
                    bare = [{"method": "GET", "url": url + path}]
                    result = run_load(
                        f"bare {kind} forwarder, {clients} client(s)", bare, concurrency=clients, duration=DURATION
                    )
                    rows.append(result_row(result, baseline))
                if clients == 1:
                    added = ours.p50_ms - baseline.p50_ms
                    rows.append([f"gateway adds at p50, 1 client: {added:.2f} ms", "", "", "", "", ""])
            print_table(f"GET {path} (points service reading PostgreSQL), {DURATION:.0f} s each", LOAD_HEADERS, rows)
        finally:
            for process, _ in forwarders.values():
                process.terminate()
                process.wait()


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
