from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Platform
from tests.webhooks.receiver import Receiver

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]

# Endpoints are programme-wide: a test that registers one has a platform of its own, the gateway alone when the
# test posts events to it as the services' relays would.
OWN_GATEWAY = pytest.mark.own_platform(services=["gateway"])


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def start(**kwargs: Any) -> Receiver:
        receiver = await Receiver(**kwargs).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def endpoints(admin: httpx.AsyncClient) -> EndpointFactory:
    """Registers endpoints through the API. Endpoints are programme-wide (each receives every event it subscribed
    to), so a test that registers one runs on a platform of its own (`own_platform`): no other test sees them."""

    async def register(url: str, events: list[str], **extra: Any) -> dict[str, Any]:
        response = await admin.post("/v1/webhook-endpoints", json={"url": url, "events": events, **extra})
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    return register


def gateway_app(platform: Platform) -> Any:
    return platform.servers["gateway"].server.config.app
