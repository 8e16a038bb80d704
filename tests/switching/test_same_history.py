"""The same history leaves the same state whatever the timing (contract v1.1, per-customer order): twenty Online
Retail customers' purchases, with three tiers whose multipliers depend on what came before, sent once one at a
time (each delivered before the next) and once in batches while the points service is killed and restarted
between them. Every customer's earnings, in order, and final balance and tier are identical."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from scripts.replay import purchases
from tests.conftest import ARTIFACTS, Platform
from tests.support.database import create_database, drop_database, server_url
from tests.support.servers import InProcessServer, ServiceProcess, free_port

pytestmark = pytest.mark.slow

TIERS = [
    {"name": "bronze", "threshold": 0, "earn_multiplier": 1},
    {"name": "silver", "threshold": 300, "earn_multiplier": 1.5},
    {"name": "gold", "threshold": 1500, "earn_multiplier": 2},
]


@dataclass
class Rig:
    points: ServiceProcess
    gateway: InProcessServer
    headers: dict[str, str]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.gateway.url, headers=self.headers, timeout=120)


@pytest.fixture
async def rig(platform: Platform) -> AsyncIterator[Rig]:
    base = await asyncio.to_thread(server_url)
    database_url, name = await create_database(base)
    env = {**platform.env, "DATABASE_URL": database_url}
    points = ServiceProcess("points", free_port(), env, ARTIFACTS / "logs" / "same-history-points.log").start()
    gateway: InProcessServer | None = None
    try:
        await points.wait_ready()
        settings = GatewaySettings(  # type: ignore[call-arg]
            DATABASE_URL=database_url,
            POINTS_URL=points.url,
            # only points takes part: the other consumers' deliveries wait in their own lanes
            COUPON_URL=f"http://127.0.0.1:{free_port()}",
            RECOMMEND_URL=f"http://127.0.0.1:{free_port()}",
            SURVEY_URL=f"http://127.0.0.1:{free_port()}",
            OUTBOX_POLL_SECONDS=0.05,
            OUTBOX_BASE_DELAY_SECONDS=2.0,
            OUTBOX_MAX_DELAY_SECONDS=4.0,
            OUTBOX_TIMEOUT_SECONDS=2.0,
        )
        gateway = await InProcessServer(create_app(settings)).start()
        async with httpx.AsyncClient(
            base_url=points.url, headers={"X-Internal-Token": env["LOYALTY_INTERNAL_TOKEN"]}
        ) as c:
            assert (await c.put("/v1/points/tiers", json=TIERS)).status_code == 200
        yield Rig(points, gateway, platform.client().headers)  # type: ignore[arg-type]
    finally:
        if gateway is not None:
            await gateway.stop()
        points.stop()
        await drop_database(base, name)


def history() -> list[dict[str, Any]]:
    """The purchases of the twenty customers with most invoices among the sample's first 1,000, in order."""
    bodies = list(purchases(limit=1000, with_email=False))
    busiest = {c for c, _ in Counter(b["customer_id"] for b in bodies).most_common(20)}
    return [b for b in bodies if b["customer_id"] in busiest]


def renamed(bodies: list[dict[str, Any]], run: str) -> list[dict[str, Any]]:
    return [
        {**b, "purchase_id": f"{run}-{b['purchase_id']}", "customer_id": f"{run}-{b['customer_id']}"} for b in bodies
    ]


async def state(client: httpx.AsyncClient, bodies: list[dict[str, Any]], run: str) -> dict[str, Any]:
    """Per original customer: earnings in the order of their purchases, balance and tier."""
    result: dict[str, Any] = {}
    for customer in sorted({b["customer_id"] for b in bodies}):
        ours = f"{run}-{customer}"
        ledger = (await client.get(f"/v1/customers/{ours}/points/transactions", params={"limit": 200})).json()
        earned = {t["reference"].removeprefix(f"{run}-"): t["points"] for t in ledger["items"] if t["type"] == "earn"}
        order = [b["purchase_id"] for b in bodies if b["customer_id"] == customer]
        view = (await client.get(f"/v1/customers/{ours}/points")).json()
        result[customer] = ([earned.get(p) for p in order], view["balance"], view["tier"])
    return result


async def drained(client: httpx.AsyncClient, bodies: list[dict[str, Any]], timeout: float = 240) -> None:
    """Until points has every one of these purchases (the rig's other consumers are not there)."""
    deadline = time.monotonic() + timeout
    for body in bodies:
        while True:
            deliveries = (await client.get(f"/v1/purchases/{body['purchase_id']}")).json()["deliveries"]
            if deliveries.get("points") == "delivered":
                break
            assert deliveries.get("points") == "pending", deliveries
            if time.monotonic() > deadline:
                raise TimeoutError(f"points has not got {body['purchase_id']} after {timeout} s")
            await asyncio.sleep(0.05)


async def test_one_at_a_time_and_batches_across_a_restart_agree(rig: Rig) -> None:
    bodies = history()
    assert len(bodies) > 60 and max(Counter(b["customer_id"] for b in bodies).values()) >= 8
    async with rig.client() as client:
        single = renamed(bodies, "single")
        for body in single:
            assert (await client.post("/v1/purchases", json=body)).status_code == 202
            await drained(client, [body])

        batched = renamed(bodies, "batch")
        half = len(batched) // 2
        ndjson = {"Content-Type": "application/x-ndjson"}
        # the first half arrives while points is down: its deliveries fail and wait for their retries, and the
        # second half arrives as soon as points is back, before those retries are due
        rig.points.kill()
        first = await client.post(
            "/v1/purchases:batch", content=b"\n".join(map(orjson.dumps, batched[:half])), headers=ndjson
        )
        assert first.json()["accepted"] == half, first.text
        await asyncio.sleep(1.5)
        rig.points.start()
        await rig.points.wait_ready()
        second = await client.post(
            "/v1/purchases:batch", content=b"\n".join(map(orjson.dumps, batched[half:])), headers=ndjson
        )
        assert second.json()["accepted"] == len(batched) - half, second.text
        await drained(client, batched)

        expected = await state(client, bodies, "single")
        # the tiers matter to this history: some purchases earned more than their base of a point per pound
        base = {b["purchase_id"]: int(float(b["total"])) for b in bodies}
        order = {c: [b["purchase_id"] for b in bodies if b["customer_id"] == c] for c in expected}
        lifted = [
            p
            for c, (earned, _, _) in expected.items()
            for p, e in zip(order[c], earned, strict=True)
            if (e or 0) > base[p]
        ]
        assert len(lifted) >= 10, expected
        assert await state(client, bodies, "batch") == expected
