"""The gateway's rate limits in Redis (REDIS_URL) against the in-process ones, in the same run: the same partner
GET straight to the points service (the baseline), through a gateway limiting in its own memory, and through a
second gateway whose limits are token buckets in a real redis-server (one Lua script per request). CPU per
request counts the points service, both gateways and redis-server in every row.

Goal (issue 17): the added cost of shared limits is reported; no ceiling is set for it.
"""

from __future__ import annotations

import asyncio

import httpx

from scripts.benchlib import (
    LOAD_HEADERS,
    ROOT,
    CpuMeter,
    fresh_database,
    platform,
    print_table,
    result_row,
    run_load,
)
from tests.support.redis import RedisServer
from tests.support.servers import ServiceProcess, free_port

DURATION = 8.0


async def bench() -> None:
    redis = RedisServer().start()
    try:
        async with fresh_database() as database_url, platform(database_url, services=["points"]) as stack:
            port = free_port()
            env = {**stack.env, "REDIS_URL": redis.url, "GATEWAY_PORT": str(port), "MIGRATE_ON_START": "false"}
            shared = ServiceProcess("gateway", port, env, ROOT / ".data" / "bench-logs" / "gateway-redis.log").start()
            try:
                await shared.wait_ready(path="/healthz")
                async with httpx.AsyncClient(headers=stack.admin_headers) as admin:
                    created = await admin.post(
                        stack.url("gateway") + "/v1/api-keys", json={"name": "bench", "scopes": ["points:read"]}
                    )
                    key = created.json()["key"]
                path = "/v1/customers/bench-customer/points"
                partner = {"Authorization": f"Bearer {key}"}
                direct = [{"method": "GET", "url": stack.url("points") + path, "headers": stack.internal_headers}]
                local = [{"method": "GET", "url": stack.url("gateway") + path, "headers": partner}]
                in_redis = [{"method": "GET", "url": shared.url + path, "headers": partner}]
                extra = [p for p in (shared.process, redis.process) if p is not None]
                rows = []
                for clients in (16, 1):

                    def load(label: str, requests: list[dict[str, object]], clients: int = clients) -> object:
                        return run_load(
                            f"{label}, {clients} client(s)",
                            requests,
                            concurrency=clients,
                            duration=DURATION,
                            cpu=CpuMeter.current(extra=[p.pid for p in extra]),
                        )

                    baseline = load("direct to the service", direct)
                    own = load("gateway, limits in its memory", local)
                    redis_backed = load("gateway, limits in Redis", in_redis)
                    rows += [result_row(r, baseline) for r in (baseline, own, redis_backed)]  # type: ignore[arg-type]
                    added = redis_backed.p50_ms - own.p50_ms  # type: ignore[attr-defined]
                    cpu = redis_backed.cpu_ms_per_op - own.cpu_ms_per_op  # type: ignore[attr-defined]
                    rows.append([f"Redis adds, {clients} client(s): {added:.2f} ms at p50, {cpu:.2f} CPU ms/req"])
                    rows[-1] += [""] * (len(LOAD_HEADERS) - 1)
                print_table(f"GET {path}, partner key, {DURATION:.0f} s each", LOAD_HEADERS, rows)
            finally:
                shared.stop()
    finally:
        redis.cleanup()


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
