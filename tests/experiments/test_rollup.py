"""The outcomes rollup (`experiment_outcomes`, kept by triggers) when a purchase and an exposure of the same
customer are written at the same moment by two transactions: neither sees the other's uncommitted row, so without
the triggers' advisory locks the purchase would be counted by neither. Driven step by step on two real
connections, so the interleaving is the same every run."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from kit.experiments import assign_arm
from tests.experiments.helpers import results, start, uid
from tests.experiments.test_api import coupon_rule

T0 = datetime(2026, 4, 1, 10, tzinfo=UTC)


async def _purchase(connection: asyncpg.Connection, customer: str, at: datetime, total: str) -> None:
    body = {"purchase_id": uid("p"), "customer_id": customer, "occurred_at": at.isoformat(), "currency": "GBP",
            "total": total, "items": []}  # fmt: skip
    await connection.execute(
        "INSERT INTO purchases (purchase_id, customer_id, body_hash, body, event_id) VALUES ($1, $2, 'x', $3, $4)",
        body["purchase_id"],
        customer,
        json.dumps(body),
        uuid.uuid4(),
    )


async def _expose(connection: asyncpg.Connection, experiment: dict[str, str], customer: str) -> None:
    await connection.execute(
        "INSERT INTO experiment_exposures (experiment_id, customer_id, arm, exposed_at) VALUES ($1, $2, $3, $4)",
        uuid.UUID(experiment["id"]),
        customer,
        assign_arm(experiment["id"], customer, 50),
        T0,
    )


async def test_a_purchase_and_an_exposure_written_at_once_are_counted(
    admin: httpx.AsyncClient, database_url: str
) -> None:
    experiment = await start(admin, "coupon_rule", (await coupon_rule(admin, n=94))["id"], holdout=50)
    first, second = uid("race"), uid("race")
    one = await asyncpg.connect(database_url, server_settings={"search_path": "gateway"})
    two = await asyncpg.connect(database_url, server_settings={"search_path": "gateway"})
    try:
        # the purchase's transaction first: the exposure waits for it, then sees its purchase
        purchase = one.transaction()
        await purchase.start()
        await _purchase(one, first, T0 + timedelta(days=2), "30.00")
        exposure = two.transaction()
        await exposure.start()
        exposing = asyncio.create_task(_expose(two, experiment, first))
        await asyncio.sleep(0.3)
        await purchase.commit()
        await exposing
        await exposure.commit()

        # the exposure's transaction first: the purchase waits for it, then adds itself to the exposure's days
        exposure = two.transaction()
        await exposure.start()
        await _expose(two, experiment, second)
        purchase = one.transaction()
        await purchase.start()
        purchasing = asyncio.create_task(_purchase(one, second, T0 + timedelta(days=3), "12.00"))
        await asyncio.sleep(0.3)
        await exposure.commit()
        await purchasing
        await purchase.commit()
    finally:
        await one.close()
        await two.close()
    report = await results(admin, experiment["id"], window_days=30)
    returned = sum(a["customers_returned"] for a in report["arms"].values())
    revenue = sum(float(a["revenue"]) for a in report["arms"].values())
    assert (returned, revenue) == (2, 42.0), report["arms"]
    await admin.post(f"/v1/experiments/{experiment['id']}/stop")
