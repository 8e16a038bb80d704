"""The whole loop on real data, with every process a real child process: replay the first invoices of the
Online Retail December 2010 sample through POST /v1/purchases, then check what each lever did with them.

- points: each customer's balance is what the rules say (1 point per GBP, rounded down once per purchase);
- coupons: the "2nd purchase" surprise rule issued exactly one coupon to each customer with two or more
  purchases, and none to the others;
- recommendations: every buyer gets personal recommendations after a retrain;
- surveys: every buyer with an email got one invitation over SMTP (the cooldown holds back the rest).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from scripts.replay import purchases
from tests.conftest import ADMIN_KEY, ARTIFACTS
from tests.support.database import create_database, drop_database, server_url
from tests.support.mail import Mailbox
from tests.support.stack import process_stack

pytestmark = pytest.mark.slow

INVOICES = 300


@dataclass
class Loop:
    gateway_url: str
    bodies: list[dict[str, Any]]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.gateway_url,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=60,
            limits=httpx.Limits(max_connections=32),
        )


async def eventually(check: Any, *, timeout: float = 90.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(every)


@pytest.fixture(scope="module")
async def loop(platform_env: dict[str, str], mailbox: Mailbox) -> AsyncIterator[Loop]:
    base = await asyncio.to_thread(server_url)
    database_url, name = await create_database(base)
    env = {
        **platform_env,
        "DATABASE_URL": database_url,
        "POST_PURCHASE_SURVEY_DELAY_SECONDS": "0",
        "OUTBOX_POLL_SECONDS": "0.1",
        "RATE_LIMIT_PARTNER_PER_MINUTE": "1000000",
        # the invoices of December 2010 play live traffic here, so they may still surprise and survey their buyers
        "RECENT_PURCHASE_HOURS": str(24 * 366 * 30),
    }
    try:
        async with process_stack(env, ARTIFACTS / "logs" / "loop") as processes:
            loop = Loop(processes["gateway"].url, list(purchases(limit=INVOICES)))
            async with loop.client() as client:
                await set_up_the_levers(client)
                semaphore = asyncio.Semaphore(16)

                async def send(body: dict[str, Any]) -> int:
                    async with semaphore:
                        return (await client.post("/v1/purchases", json=body)).status_code

                statuses = await asyncio.gather(*(send(body) for body in loop.bodies))
                assert set(statuses) == {202}

                async def drained() -> bool:
                    pending = await client.get("/v1/admin/deliveries", params={"status": "pending", "limit": 1})
                    return not pending.json()["items"]

                assert await eventually(drained, timeout=180), "deliveries did not drain"
                failed = (await client.get("/v1/admin/deliveries", params={"status": "failed"})).json()["items"]
                assert failed == []
            yield loop
    finally:
        await drop_database(base, name)


async def set_up_the_levers(client: httpx.AsyncClient) -> None:
    rules = {
        "points_per_currency_unit": "1",
        "category_multipliers": {},
        "bonus_campaigns": [],
        # lots expire from their purchase's own time: December 2010's would all be gone once the expiry job ran
        "expires_after_days": None,
    }
    assert (await client.put("/v1/points/rules", json=rules)).status_code == 200
    tiers = [{"name": "Member", "threshold": 0, "earn_multiplier": "1"}]
    assert (await client.put("/v1/points/tiers", json=tiers)).status_code == 200

    campaign = await client.post(
        "/v1/coupon-campaigns",
        json={
            "name": "Thank you for coming back",
            "discount": {"type": "percent", "value": "10"},
            "code": {"prefix": "BACK", "length": 12, "charset": "unambiguous"},
            "limits": {"per_code": 1, "per_customer": 1},
        },
    )
    assert campaign.status_code == 201, campaign.text
    rule = await client.post(
        "/v1/coupon-rules",
        json={
            "campaign_id": campaign.json()["id"],
            "trigger": {"type": "nth_purchase", "n": 2},
        },
    )
    assert rule.status_code == 201, rule.text

    survey = await client.post(
        "/v1/surveys",
        json={
            "name": "How was your order?",
            "questions": [
                {"id": "nps", "type": "nps", "text": "How likely are you to recommend us?", "required": True}
            ],
            "reward_points": 50,
            "cooldown_days": 90,
            "send_after_purchase": True,
        },
    )
    assert survey.status_code == 201, survey.text


def expected_points(bodies: list[dict[str, Any]]) -> dict[str, int]:
    balances: dict[str, int] = defaultdict(int)
    for body in bodies:
        balances[body["customer_id"]] += math.floor(Decimal(body["total"]))
    return dict(balances)


async def test_points_balances_match_the_rules(loop: Loop) -> None:
    expected = expected_points(loop.bodies)
    async with loop.client() as client:
        for customer, points in expected.items():
            balance = (await client.get(f"/v1/customers/{customer}/points")).json()
            assert balance["balance"] == points, customer
        audit = (await client.get("/v1/points/audit")).json()
    assert audit["accounts_checked"] >= len(expected)
    assert audit["mismatches"] == []


async def test_surprise_coupons_were_issued_by_the_rule(loop: Loop) -> None:
    purchases_per_customer: dict[str, int] = defaultdict(int)
    for body in loop.bodies:
        purchases_per_customer[body["customer_id"]] += 1
    async with loop.client() as client:
        for customer, count in purchases_per_customer.items():
            wallet = (await client.get(f"/v1/customers/{customer}/coupons")).json()["items"]
            assert len(wallet) == (1 if count >= 2 else 0), (customer, count, wallet)
    assert any(count >= 2 for count in purchases_per_customer.values())


async def test_buyers_get_personal_recommendations(loop: Loop) -> None:
    buyers = {body["customer_id"] for body in loop.bodies}
    async with loop.client() as client:
        assert (await client.post("/v1/recommend/model/retrain")).status_code == 202

        async def trained_on_every_buyer() -> bool:
            # a scheduled retrain may have started before the last purchase arrived: wait for one that saw all
            return (await client.get("/v1/recommend/model")).json()["customers"] >= len(buyers)

        assert await eventually(trained_on_every_buyer, timeout=60)
        strategies = []
        for customer in sorted(buyers)[:40]:
            response = (await client.get(f"/v1/customers/{customer}/recommendations", params={"limit": 5})).json()
            strategies.append(response["strategy"])
            assert len(response["items"]) == 5
            assert all(item["reason"] for item in response["items"])
    # A buyer of one rare product has nothing to learn from yet and gets popular items; most buyers do not.
    assert strategies.count("personal") >= 0.8 * len(strategies), strategies
    assert set(strategies) <= {"personal", "popular"}


async def test_every_buyer_was_invited_by_email_once(loop: Loop, mailbox: Mailbox) -> None:
    customers = {body["customer_id"] for body in loop.bodies}
    for customer in sorted(customers)[:25]:
        messages = await mailbox.wait_for(f"customer-{customer}@example.com", timeout=60)
        assert len(messages) == 1, customer
        assert "/s/" in messages[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_the_overview_shows_all_four_levers(loop: Loop) -> None:
    repeat_buyer = next(
        b["customer_id"] for b in loop.bodies if sum(o["customer_id"] == b["customer_id"] for o in loop.bodies) >= 2
    )
    # the overview is kept by the services' events: what the loop did shows once their events reached the gateway
    # (docs/purchases.md#customer-overview), within seconds
    async with loop.client() as client:
        deadline = time.monotonic() + 10
        while True:
            overview = (await client.get(f"/v1/customers/{repeat_buyer}/overview")).json()
            levers = overview["coupons"] and overview["surveys"] and overview["surveys"]["pending"]
            if (levers and not overview["unavailable"]) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert overview["unavailable"] == []
    assert overview["points"]["balance"] > 0
    assert len(overview["coupons"]) == 1
    assert overview["recommendations"]
    assert len(overview["surveys"]["pending"]) == 1
