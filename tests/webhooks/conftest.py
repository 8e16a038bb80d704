from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Platform
from tests.webhooks.receiver import Receiver

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]


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
async def endpoints(admin: httpx.AsyncClient) -> AsyncIterator[EndpointFactory]:
    """Registers endpoints through the API and deletes them after the test, so no later test delivers to a
    receiver that is gone."""
    created: list[str] = []

    async def register(url: str, events: list[str], **extra: Any) -> dict[str, Any]:
        response = await admin.post("/v1/webhook-endpoints", json={"url": url, "events": events, **extra})
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])
        return response.json()  # type: ignore[no-any-return]

    yield register
    for endpoint_id in created:
        await admin.delete(f"/v1/webhook-endpoints/{endpoint_id}")


def gateway_app(platform: Platform) -> Any:
    return platform.servers["gateway"].server.config.app
