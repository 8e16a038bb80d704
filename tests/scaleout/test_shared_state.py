"""kit.shared_state against a real redis-server: limits shared by replicas, messages to every replica, and the
fallback on each process's own state whenever Redis is away (never an error, never a long wait)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from prometheus_client import REGISTRY

from gateway.ratelimit import RateLimiter
from kit.shared_state import SharedRateLimiter, SharedState
from tests.support.redis import RedisServer
from tests.support.servers import free_port


def limiter(shared: SharedState, per_minute: int, name: str = "test") -> SharedRateLimiter:
    return SharedRateLimiter(name, per_minute, shared, RateLimiter(per_minute))


def fallbacks(operation: str) -> float:
    return REGISTRY.get_sample_value("shared_state_fallbacks_total", {"operation": operation}) or 0.0


async def test_two_replicas_share_one_budget(redis_server: RedisServer) -> None:
    one, two = SharedState(redis_server.url), SharedState(redis_server.url)
    try:
        a, b = limiter(one, 6), limiter(two, 6)
        key = uuid.uuid4().hex
        waits = [await (a if i % 2 else b).acquire(key) for i in range(6)]
        assert waits == [0.0] * 6
        # the budget is spent for both replicas: each alone would have allowed 6
        refused_a, refused_b = await a.acquire(key), await b.acquire(key)
        assert 0 < refused_a <= 10 and 0 < refused_b <= 10
        assert await a.peek(key) > 0
        assert await a.acquire(uuid.uuid4().hex) == 0.0, "another key has its own budget"
    finally:
        await one.close()
        await two.close()


async def test_the_bucket_refills_at_the_steady_rate(redis_server: RedisServer) -> None:
    shared = SharedState(redis_server.url)
    try:
        fast = limiter(shared, 600)  # ten a second
        key = uuid.uuid4().hex
        taken = 0
        while (wait := await fast.acquire(key)) == 0.0:
            taken += 1
            assert taken <= 1200, "the bucket never ran dry"
        assert taken >= 600, "a full minute's allowance first"
        assert 0 < wait <= 0.1
        await asyncio.sleep(wait + 0.05)
        assert await fast.acquire(key) == 0.0
    finally:
        await shared.close()


async def test_without_redis_each_process_limits_on_its_own() -> None:
    shared = SharedState(None)
    assert not shared.configured and await shared.ready() is None
    a = limiter(shared, 2)
    assert [await a.acquire("k") for _ in range(2)] == [0.0, 0.0]
    assert await a.acquire("k") > 0


async def test_an_unreachable_redis_falls_back_at_once_and_says_so() -> None:
    shared = SharedState(f"redis://127.0.0.1:{free_port()}/0")
    try:
        a = limiter(shared, 2, name="unreachable")
        before = fallbacks("rate:unreachable")
        started = time.perf_counter()
        waits = [await a.acquire("k") for _ in range(3)]
        elapsed = time.perf_counter() - started
        assert waits[:2] == [0.0, 0.0] and waits[2] > 0, "the local limiter answers"
        assert elapsed < 1.0, "one failed try, then no more tries for retry_seconds"
        assert fallbacks("rate:unreachable") == before + 3
        assert REGISTRY.get_sample_value("shared_state_up") == 0
        note = await shared.ready()
        assert note and "Redis unreachable" in note
        assert await shared.publish("anything", {"x": 1}) is False
    finally:
        await shared.close()


async def test_a_restarted_redis_is_used_again(redis_server: RedisServer) -> None:
    server = RedisServer().start()
    shared = SharedState(server.url, retry_seconds=0.2)
    try:
        a = limiter(shared, 3, name="restart")
        key = uuid.uuid4().hex
        assert await a.acquire(key) == 0.0 and shared.available
        server.stop()
        assert await a.acquire(key) == 0.0  # local answer
        assert not shared.available
        server.start()  # same port, empty: the script is loaded again by itself
        await asyncio.sleep(0.3)
        assert await a.acquire(key) == 0.0
        assert shared.available and await shared.ready() is None
        assert REGISTRY.get_sample_value("shared_state_up") == 1
    finally:
        await shared.close()
        server.cleanup()


async def test_messages_reach_every_replica_and_a_broken_subscription_is_noticed() -> None:
    server = RedisServer().start()
    sender, receiver = SharedState(server.url), SharedState(server.url, retry_seconds=0.2)
    received: list[dict[str, Any]] = []
    resubscribed: list[float] = []
    receiver.subscribe("revocations", received.append)
    receiver.on_resubscribed(lambda: resubscribed.append(time.monotonic()))
    await receiver.start()
    try:
        await asyncio.wait_for(receiver.subscribed.wait(), 5)
        arrived = asyncio.Event()
        receiver.subscribe("revocations", lambda _message: arrived.set())
        assert await sender.publish("revocations", {"kind": "api_key", "key_hash": "h1"})
        await asyncio.wait_for(arrived.wait(), 1.0)
        assert received == [{"kind": "api_key", "key_hash": "h1"}]

        server.stop()
        await asyncio.sleep(1.5)  # the listener notices within its one-second poll
        assert not receiver.subscribed.is_set()
        server.start()
        await asyncio.wait_for(receiver.subscribed.wait(), 5)
        assert resubscribed, "messages may have been missed: the hook lets the replica drop its caches"
    finally:
        await receiver.close()
        await sender.close()
        server.cleanup()
