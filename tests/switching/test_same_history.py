"""The same history leaves the same state whatever the timing (contract v1.1, per-customer order): twenty Online
Retail customers' purchases, with three tiers whose multipliers depend on what came before, sent once one at a
time (each delivered before the next) and once in batches while the points service is killed and restarted
between them. Every customer's earnings, in order, and final balance and tier are identical."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from scripts.replay import purchases
from tests.conftest import Platform
from tests.support.rigs import PointsRig, points_behind_gateway

pytestmark = pytest.mark.slow

TIERS = [
    {"name": "bronze", "threshold": 0, "earn_multiplier": 1},
    {"name": "silver", "threshold": 300, "earn_multiplier": 1.5},
    {"name": "gold", "threshold": 1500, "earn_multiplier": 2},
]


@pytest.fixture
async def rig(platform: Platform) -> AsyncIterator[PointsRig]:
    async with points_behind_gateway(
        platform,
        "same-history-points",
        client_timeout=120,
        OUTBOX_POLL_SECONDS=0.05,
        OUTBOX_BASE_DELAY_SECONDS=2.0,
        OUTBOX_MAX_DELAY_SECONDS=4.0,
        OUTBOX_TIMEOUT_SECONDS=2.0,
    ) as rig:
        async with httpx.AsyncClient(
            base_url=rig.points.url, headers={"X-Internal-Token": platform.env["LOYALTY_INTERNAL_TOKEN"]}
        ) as points:
            assert (await points.put("/v1/points/tiers", json=TIERS)).status_code == 200
        yield rig


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


async def test_one_at_a_time_and_batches_across_a_restart_agree(rig: PointsRig) -> None:
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
        # lots expire a year after their purchase's own time: the expiry job (which a restart of points puts off)
        # runs now, so both histories are read with their lots of 2010 expired alike
        assert (await client.post("/v1/points/expiry-runs")).status_code == 201

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
