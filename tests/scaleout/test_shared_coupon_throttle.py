"""Two coupon replicas sharing one Redis: failed guesses are counted once for both, per (caller, customer) and
per caller, with the semantics of the in-process throttle; with Redis gone each replica counts on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import httpx
import pytest

from coupon.app import create_app
from coupon.settings import CouponSettings
from tests.conftest import INTERNAL_TOKEN, Platform
from tests.support.redis import RedisServer
from tests.support.servers import InProcessServer

PAIR_LIMIT, CALLER_LIMIT = 4, 6
SCOPES = "coupons:read coupons:write"


async def start_coupon(redis_url: str) -> InProcessServer:
    settings = CouponSettings(  # type: ignore[call-arg]
        PROCESS_ROLE="api",
        MIGRATE_ON_START="false",
        REDIS_URL=redis_url,
        COUPON_GUESS_LIMIT=PAIR_LIMIT,
        COUPON_GUESS_CALLER_LIMIT=CALLER_LIMIT,
    )
    return await InProcessServer(create_app(settings)).start()


@pytest.fixture
async def replicas(platform: Platform, redis_server: RedisServer) -> AsyncIterator[list[httpx.AsyncClient]]:
    servers = [await start_coupon(redis_server.url), await start_coupon(redis_server.url)]
    clients = [
        httpx.AsyncClient(base_url=s.url, headers={"X-Internal-Token": INTERNAL_TOKEN}, timeout=30) for s in servers
    ]
    yield clients
    for client in clients:
        await client.aclose()
    await asyncio.gather(*(s.stop() for s in servers))


def guess(customer: str) -> dict[str, str]:
    return {"customer_id": customer, "order_total": "10.00", "currency": "EUR"}


async def test_failed_guesses_are_counted_once_for_both_replicas(replicas: list[httpx.AsyncClient]) -> None:
    caller = {"X-Caller-Kind": "partner", "X-Caller-Id": f"guesser-{uuid4().hex[:8]}", "X-Caller-Scopes": SCOPES}
    customer = f"c-{uuid4().hex[:8]}"
    statuses = [
        (
            await replicas[i % 2].post(f"/v1/coupons/NOPE{i:010d}/validation", json=guess(customer), headers=caller)
        ).status_code
        for i in range(PAIR_LIMIT + 1)
    ]
    # alone, each replica would have seen only 3 of the pair's failures and answered 404 to all of them
    assert statuses == [404] * PAIR_LIMIT + [429]
    other = f"c-{uuid4().hex[:8]}"
    assert (
        await replicas[0].post("/v1/coupons/NOPE0000000099/validation", json=guess(other), headers=caller)
    ).status_code == 404
    # the caller's ceiling (6) is now reached across both replicas: every call of that caller waits
    refused = await replicas[1].post("/v1/coupons/NOPE0000000100/validation", json=guess(other), headers=caller)
    assert refused.status_code == 429
    assert refused.json()["scope"] == "caller"


async def test_without_redis_each_replica_counts_on_its_own(platform: Platform) -> None:
    redis = RedisServer().start()
    server = await start_coupon(redis.url)
    redis.stop()
    try:
        caller = {"X-Caller-Kind": "partner", "X-Caller-Id": f"guesser-{uuid4().hex[:8]}", "X-Caller-Scopes": SCOPES}
        async with httpx.AsyncClient(base_url=server.url, headers={"X-Internal-Token": INTERNAL_TOKEN}) as client:
            customer = f"c-{uuid4().hex[:8]}"
            statuses = [
                (
                    await client.post(f"/v1/coupons/NOPE{i:010d}/validation", json=guess(customer), headers=caller)
                ).status_code
                for i in range(PAIR_LIMIT + 1)
            ]
            assert statuses == [404] * PAIR_LIMIT + [429]
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and "redis" in ready.json()["degraded"]
    finally:
        await server.stop()
        redis.cleanup()
