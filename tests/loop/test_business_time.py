"""Importing history wakes no one (contract v1.1, "a purchase's own time"): through the gateway and the real
relay, a purchase 200 days old earns its points (expiring from its own time) and counts toward the coupon
rules, but brings no surprise coupon and no survey invitation; a purchase of an hour ago brings both. Every
delivery of both still ends `delivered`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.coupon.helpers import create_campaign, uid
from tests.loop.helpers import purchase_body, wait_for_deliveries
from tests.survey.conftest import address, create_survey


@pytest.fixture
async def survey_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "survey"})
    yield connection
    await connection.close()


async def campaign_codes(client: httpx.AsyncClient, customer: str, campaign_id: str) -> list[str]:
    response = await client.get(f"/v1/customers/{customer}/coupons")
    assert response.status_code == 200, response.text
    return [c["code"] for c in response.json()["items"] if c["campaign_id"] == campaign_id]


# its post-purchase survey and surprise rule would follow every other test's purchases
@pytest.mark.own_platform
async def test_an_old_purchase_earns_but_wakes_no_one(admin: httpx.AsyncClient, survey_db: asyncpg.Connection) -> None:
    await create_survey(admin, name=uid("after-purchase-"), send_after_purchase=True)
    campaign = await create_campaign(admin)
    rule = await admin.post(
        "/v1/coupon-rules",
        json={
            "campaign_id": campaign["id"],
            "trigger": {"type": "order_total_at_least", "amount": "600.00", "currency": "GBP"},
        },
    )
    assert rule.status_code == 201, rule.text
    now = datetime.now(UTC).replace(microsecond=0)
    old = purchase_body(total="640.00", email=address())
    old["occurred_at"] = (now - timedelta(days=200)).isoformat()
    recent = purchase_body(total="640.00", email=address())
    recent["occurred_at"] = (now - timedelta(hours=1)).isoformat()
    for body in (old, recent):
        response = await admin.post("/v1/purchases", json=body)
        assert response.status_code == 202, response.text
    for body in (old, recent):
        assert set((await wait_for_deliveries(admin, body["purchase_id"])).values()) == {"delivered"}

    assert await campaign_codes(admin, old["customer_id"], campaign["id"]) == []
    assert len(await campaign_codes(admin, recent["customer_id"], campaign["id"])) == 1
    invited = "SELECT count(*) FROM invitations WHERE customer_id = $1"
    assert await survey_db.fetchval(invited, old["customer_id"]) == 0
    assert await survey_db.fetchval(invited, recent["customer_id"]) == 1

    points = (await admin.get(f"/v1/customers/{old['customer_id']}/points")).json()
    assert points["balance"] == 640
    expires_at = datetime.fromisoformat(points["expiring"][0]["expires_at"])
    assert expires_at == now - timedelta(days=200) + timedelta(days=365)
