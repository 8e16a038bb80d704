"""A service that dies answers 503 problem+json at the gateway, and serves again once it is back."""

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import ARTIFACTS, Platform
from tests.support.servers import InProcessServer, ServiceProcess, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
async def points_process(platform: Platform) -> AsyncIterator[ServiceProcess]:
    process = ServiceProcess("points", free_port(), platform.env, ARTIFACTS / "logs" / "points-restart.log").start()
    try:
        await process.wait_ready()
        yield process
    finally:
        process.stop()


async def test_killed_service_is_503_then_comes_back(platform: Platform, points_process: ServiceProcess) -> None:
    settings = GatewaySettings(POINTS_URL=points_process.url)  # type: ignore[call-arg]
    gateway = await InProcessServer(create_app(settings)).start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, headers=platform.client().headers) as client:
            assert (await client.get("/v1/customers/c1/points")).status_code == 200

            points_process.kill()
            down = await client.get("/v1/customers/c1/points")
            assert down.status_code == 503
            assert down.headers["content-type"] == "application/problem+json"
            assert down.json()["code"] == "service_unavailable"
            assert down.json()["service"] == "points"
            # the gateway itself stays up and answers its own routes
            assert (await client.get("/v1/api-keys")).status_code == 200

            points_process.start()
            await points_process.wait_ready()
            assert (await client.get("/v1/customers/c1/points")).status_code == 200
    finally:
        await gateway.stop()
