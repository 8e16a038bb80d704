"""Two gateway replicas sharing one Redis (REDIS_URL): a caller's rate limit is one budget for both, a revoked
API key or customer token is refused by the other replica within a second (its caches would keep it for a
minute here), and with Redis gone both serve on with limits of their own, saying so in /readyz."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from uuid import uuid4

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import Platform
from tests.support.redis import RedisServer
from tests.support.servers import InProcessServer

PARTNER_LIMIT = 12


async def start_gateway(redis_url: str, **overrides: object) -> InProcessServer:
    settings = GatewaySettings(  # type: ignore[call-arg]
        PROCESS_ROLE="api",
        MIGRATE_ON_START="false",
        REDIS_URL=redis_url,
        RATE_LIMIT_PARTNER_PER_MINUTE=PARTNER_LIMIT,
        RATE_LIMIT_CUSTOMER_PER_MINUTE=1000,
        # long enough that only the broadcast can explain a revocation seen within a second
        API_KEY_CACHE_SECONDS=60,
        TOKEN_REVOCATION_CACHE_SECONDS=60,
        **overrides,
    )
    server = await InProcessServer(create_app(settings)).start()
    await asyncio.wait_for(server.server.config.app.state.shared_state.subscribed.wait(), 10)
    return server


@pytest.fixture
async def gateways(platform: Platform, redis_server: RedisServer) -> AsyncIterator[tuple[str, str]]:
    one = await start_gateway(redis_server.url)
    two = await start_gateway(redis_server.url)
    yield one.url, two.url
    await asyncio.gather(one.stop(), two.stop())


async def partner_key(admin: httpx.AsyncClient) -> dict[str, str]:
    response = await admin.post("/v1/api-keys", json={"name": f"replicas-{uuid4().hex[:6]}", "scopes": ["points:read"]})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def refused_within(client: httpx.AsyncClient, path: str, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        response = await client.get(path)
        if response.status_code == 401:
            return time.monotonic() - started
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.02)
    raise AssertionError(f"still accepted after {seconds} s")


async def test_a_partners_rate_limit_holds_across_both_gateways(
    admin: httpx.AsyncClient, gateways: tuple[str, str]
) -> None:
    key = await partner_key(admin)
    headers = {"Authorization": f"Bearer {key['key']}"}
    path = f"/v1/customers/{uuid4().hex}/points"
    async with httpx.AsyncClient(headers=headers) as client:
        statuses = [(await client.get(gateways[i % 2] + path)).status_code for i in range(PARTNER_LIMIT)]
        assert statuses == [200] * PARTNER_LIMIT
        # each gateway alone has let through only half its limit, yet both refuse now
        for url in gateways:
            refused = await client.get(url + path)
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1


async def test_a_revoked_api_key_is_refused_by_the_other_gateway_within_a_second(
    admin: httpx.AsyncClient, gateways: tuple[str, str]
) -> None:
    key = await partner_key(admin)
    path = f"/v1/customers/{uuid4().hex}/points"
    async with (
        httpx.AsyncClient(base_url=gateways[0], headers=admin.headers) as first_admin,
        httpx.AsyncClient(base_url=gateways[1], headers={"Authorization": f"Bearer {key['key']}"}) as second,
    ):
        assert (await second.get(path)).status_code == 200  # now cached as valid on the second gateway
        assert (await first_admin.delete(f"/v1/api-keys/{key['id']}")).status_code == 204
        assert await refused_within(second, path, 1.0) < 1.0


async def test_revoked_customer_tokens_are_refused_by_the_other_gateway_within_a_second(
    admin: httpx.AsyncClient, gateways: tuple[str, str]
) -> None:
    customer = f"c-{uuid4().hex[:10]}"
    token = (await admin.post("/v1/customer-tokens", json={"customer_id": customer})).json()["token"]
    async with (
        httpx.AsyncClient(base_url=gateways[0], headers={"Authorization": f"Bearer {token}"}) as first,
        httpx.AsyncClient(base_url=gateways[1], headers={"Authorization": f"Bearer {token}"}) as second,
    ):
        assert (await second.get("/v1/me/points")).status_code == 200  # "not revoked" cached on the second
        response = await first.post("/v1/customer-tokens/revocations", json={"customer_id": customer})
        assert response.status_code == 201, response.text
        assert await refused_within(second, "/v1/me/points", 1.0) < 1.0


async def test_without_redis_each_gateway_serves_on_with_its_own_limits(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    redis = RedisServer().start()
    gateway = await start_gateway(redis.url)
    try:
        key = await partner_key(admin)
        path = f"/v1/customers/{uuid4().hex}/points"
        async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key['key']}"}) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and "degraded" not in ready.json()
            assert (await client.get(path)).status_code == 200
            redis.stop()
            statuses = [(await client.get(path)).status_code for _ in range(PARTNER_LIMIT + 1)]
            # one request was counted in Redis before it went: the local budget is whole, and no answer is a 5xx
            assert statuses == [200] * PARTNER_LIMIT + [429]
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert "Redis unreachable" in ready.json()["degraded"]["redis"]
            metrics = (await client.get("/metrics")).text
            assert "shared_state_up 0.0" in metrics
            assert 'shared_state_fallbacks_total{operation="rate:partner"}' in metrics
    finally:
        await gateway.stop()
        redis.cleanup()
