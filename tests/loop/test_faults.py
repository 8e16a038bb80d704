"""Faults with real processes: the points service stopped, then hung (SIGSTOP). Purchases are still accepted at
once, the overview names what is missing, and once the service is back the delivery arrives and the balance
is right. Each test runs on its own database so no other relay can deliver on its behalf."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import Platform
from tests.loop.helpers import purchase_body, wait_for_deliveries
from tests.support.rigs import PointsRig, points_behind_gateway
from tests.support.servers import InProcessServer

pytestmark = [pytest.mark.slow, pytest.mark.real_commits]


@pytest.fixture
async def rig(platform: Platform) -> AsyncIterator[PointsRig]:
    async with points_behind_gateway(
        platform,
        "faults-points",
        OUTBOX_POLL_SECONDS=0.1,
        OUTBOX_BASE_DELAY_SECONDS=0.2,
        OUTBOX_MAX_DELAY_SECONDS=1.0,
        OUTBOX_TIMEOUT_SECONDS=1.0,
        OVERVIEW_BUDGET_MS=300,
    ) as rig:
        yield rig


async def accept_while_down(client: httpx.AsyncClient) -> dict:
    body = purchase_body(total="20.00")
    started = time.perf_counter()
    response = await client.post("/v1/purchases", json=body)
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.text
    # accepting never waits on a consumer: a call to the hung service would take the upstream timeout (10 s)
    assert elapsed < 5.0, f"accepting took {elapsed:.2f} s while points was down"
    return body


async def assert_points_unavailable(client: httpx.AsyncClient, customer: str) -> None:
    overview = await client.get(f"/v1/customers/{customer}/overview")
    assert overview.status_code == 200
    assert "points" in overview.json()["unavailable"]
    assert overview.json()["points"] is None


async def wait_points_delivered(client: httpx.AsyncClient, body: dict) -> int:
    deliveries = await wait_for_deliveries(
        client, body["purchase_id"], timeout=30, states=frozenset({"delivered", "pending", "failed"})
    )
    deadline = time.monotonic() + 30
    while deliveries.get("points") != "delivered" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        deliveries = (await client.get(f"/v1/purchases/{body['purchase_id']}")).json()["deliveries"]
    assert deliveries["points"] == "delivered"
    points = (await client.get(f"/v1/customers/{body['customer_id']}/points")).json()
    transactions = (await client.get(f"/v1/customers/{body['customer_id']}/points/transactions")).json()["items"]
    assert [t["type"] for t in transactions] == ["earn"], "the purchase earned exactly once"
    assert points["balance"] == transactions[0]["points"] > 0
    return int(points["balance"])


async def wait_points_shown(client: httpx.AsyncClient, customer: str) -> dict:
    """The overview shows points again once the gateway saw the service back: its liveness probe runs every
    second and the breaker lets a trial through after its reset time, so this waits for up to 15 s."""
    deadline = time.monotonic() + 15
    while True:
        overview = (await client.get(f"/v1/customers/{customer}/overview")).json()
        if "points" not in overview["unavailable"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    assert "points" not in overview["unavailable"]
    return overview


async def test_purchase_while_points_is_stopped(rig: PointsRig) -> None:
    async with rig.client() as client:
        rig.points.kill()
        body = await accept_while_down(client)
        await assert_points_unavailable(client, body["customer_id"])
        purchase = (await client.get(f"/v1/purchases/{body['purchase_id']}")).json()
        assert purchase["deliveries"]["points"] == "pending"

        rig.points.start()
        await rig.points.wait_ready()
        balance = await wait_points_delivered(client, body)
        overview = await wait_points_shown(client, body["customer_id"])
        assert overview["points"]["balance"] == balance


async def test_purchase_while_points_is_hung(rig: PointsRig) -> None:
    async with rig.client() as client:
        rig.points.pause()
        try:
            body = await accept_while_down(client)
            for _ in range(4):  # the breaker opens after three timeouts; the overview stays within its budget
                started = time.perf_counter()
                await assert_points_unavailable(client, body["customer_id"])
                assert time.perf_counter() - started < 2.0
        finally:
            rig.points.resume()
        balance = await wait_points_delivered(client, body)
        overview = await wait_points_shown(client, body["customer_id"])
        assert overview["points"]["balance"] == balance


async def test_a_hung_service_is_504_within_the_upstream_timeout(rig: PointsRig, platform: Platform) -> None:
    settings = GatewaySettings(  # type: ignore[call-arg]
        DATABASE_URL=platform.env["DATABASE_URL"], POINTS_URL=rig.points.url, UPSTREAM_TIMEOUT_SECONDS=0.5
    )
    gateway = await InProcessServer(create_app(settings)).start()
    rig.points.pause()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, headers=rig.headers, timeout=10) as client:
            started = time.perf_counter()
            response = await client.get("/v1/customers/c1/points")
            elapsed = time.perf_counter() - started
    finally:
        rig.points.resume()
        await gateway.stop()
    assert response.status_code == 504, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "upstream_timeout"
    assert elapsed < 3.0, "the gateway waited past its upstream timeout"
