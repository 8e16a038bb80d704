"""Per-caller rate limits: partner keys and customer tokens get 429 with Retry-After; the admin key is not limited."""

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import Platform
from tests.support.servers import InProcessServer


@pytest.fixture(scope="module")
async def strict_gateway(session_platform: Platform) -> AsyncIterator[str]:
    settings = GatewaySettings(RATE_LIMIT_CUSTOMER_PER_MINUTE=3, RATE_LIMIT_PARTNER_PER_MINUTE=4)  # type: ignore[call-arg]
    server = await InProcessServer(create_app(settings)).start()
    yield server.url
    await server.stop()


async def test_customer_token_gets_429_past_its_limit(platform: Platform, strict_gateway: str) -> None:
    async with platform.client() as admin:
        token = (await admin.post("/v1/customer-tokens", json={"customer_id": "limited"})).json()["token"]
    async with httpx.AsyncClient(base_url=strict_gateway, headers={"Authorization": f"Bearer {token}"}) as client:
        statuses = [(await client.get("/v1/me/points")).status_code for _ in range(3)]
        assert 429 not in statuses
        limited = await client.get("/v1/me/points")
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 20


async def test_limits_are_per_caller(platform: Platform, strict_gateway: str) -> None:
    async with platform.client() as admin:
        first = (await admin.post("/v1/customer-tokens", json={"customer_id": "busy-one"})).json()["token"]
        second = (await admin.post("/v1/customer-tokens", json={"customer_id": "quiet-one"})).json()["token"]
    async with httpx.AsyncClient(base_url=strict_gateway) as client:
        for _ in range(4):
            await client.get("/v1/me/points", headers={"Authorization": f"Bearer {first}"})
        assert (await client.get("/v1/me/points", headers={"Authorization": f"Bearer {first}"})).status_code == 429
        assert (await client.get("/v1/me/points", headers={"Authorization": f"Bearer {second}"})).status_code == 200


async def test_admin_key_is_not_limited(platform: Platform, strict_gateway: str) -> None:
    async with httpx.AsyncClient(base_url=strict_gateway, headers=platform.client().headers) as client:
        statuses = {(await client.get("/v1/api-keys")).status_code for _ in range(10)}
    assert statuses == {200}
