"""Small gifts as surprises: a coupon-service rule grants a catalogue item at no cost, through an outbox event
the points service consumes; the gift is a pending redemption, granted once per trigger, and takes stock."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.conftest import Platform
from tests.points.conftest import balance, new_id
from tests.points.test_rewards import create_reward


async def purchase_event(coupon: httpx.AsyncClient, customer: str, total: str, event_id: str | None = None) -> str:
    purchase_id = new_id("p")
    body = {
        "id": event_id or str(uuid.uuid4()),
        "type": "purchase.created",
        "occurred_at": datetime.now(UTC).isoformat(),
        # a currency no other test uses, so this test's rule meets only this test's purchases
        "payload": {"purchase_id": purchase_id, "customer_id": customer, "occurred_at": datetime.now(UTC).isoformat(),
                    "currency": "XTS", "total": total,
                    "items": [{"product_id": "tea", "name": "Tea", "category": "misc", "unit_price": total,
                               "quantity": 1}]},
    }  # fmt: skip
    response = await coupon.post("/internal/events", json=body)
    assert response.status_code == 200, response.text
    return purchase_id


async def gifts(points: httpx.AsyncClient, customer: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        items = (await points.get(f"/v1/customers/{customer}/reward-redemptions")).json()["items"]
        if len(items) >= count or time.monotonic() > deadline:
            return items  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)


@pytest.mark.own_platform(services=["coupon", "points", "gateway"])  # its rule fires on every purchase
async def test_a_surprise_rule_grants_a_catalogue_item(platform: Platform, admin: httpx.AsyncClient) -> None:
    reward = await create_reward(admin, name="Thank-you tea", cost_points=500, stock=2)
    rule = await admin.post(
        "/v1/coupon-rules",
        json={
            "reward_id": reward["id"],
            "trigger": {"type": "order_total_at_least", "amount": "50.00", "currency": "XTS"},
        },
    )
    assert rule.status_code == 201, rule.text
    assert (rule.json()["reward_id"], rule.json()["campaign_id"]) == (reward["id"], None)
    both = await admin.post(
        "/v1/coupon-rules",
        json={"reward_id": reward["id"], "campaign_id": str(uuid.uuid4()), "trigger": {"type": "survey_detractor"}},
    )
    assert both.status_code == 422
    async with platform.service_client("coupon") as coupon, platform.service_client("points") as points:
        lucky, small = new_id(), new_id()
        event_id = str(uuid.uuid4())
        await purchase_event(coupon, lucky, "80.00", event_id)
        await purchase_event(coupon, lucky, "80.00", event_id)  # redelivered: handled once
        await purchase_event(coupon, small, "20.00")  # below the rule's amount
        granted = await gifts(points, lucky, 1)
        assert [(g["reward_name"], g["source"], g["status"], g["points"]) for g in granted] == [
            ("Thank-you tea", "gift", "pending", 0)
        ]
        assert (await balance(points, lucky))["balance"] == 0  # a gift costs nothing
        assert (await points.get(f"/v1/rewards/{reward['id']}")).json()["stock_left"] == 1
        # a second qualifying purchase is a second gift; the third finds the stock gone and grants nothing
        await purchase_event(coupon, lucky, "90.00")
        assert len(await gifts(points, lucky, 2)) == 2
        await purchase_event(coupon, lucky, "95.00")
        await asyncio.sleep(1.0)
        assert len(await gifts(points, lucky, 3)) == 2
        assert (await points.get(f"/v1/customers/{small}/reward-redemptions")).json()["items"] == []
        # the shop hands it over like any item
        fulfilled = await admin.post(f"/v1/reward-redemptions/{granted[0]['redemption_id']}/fulfilment")
        assert fulfilled.json()["status"] == "fulfilled"
