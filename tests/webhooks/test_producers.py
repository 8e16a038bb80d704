"""Each service produces its webhook events where they happen, through its outbox, to a real receiver."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from kit.db import Database
from kit.settings import asyncpg_url
from kit.webhooks import EVENT_MODELS, PointsEarned, publish_webhook
from scripts.webhook_receiver import verify as partner_verify
from tests.conftest import Platform
from tests.support.mail import Mailbox
from tests.survey.conftest import create_survey, invite, links
from tests.webhooks.conftest import EndpointFactory
from tests.webhooks.receiver import Receiver

Receivers = Callable[..., Awaitable[Receiver]]

# endpoints are programme-wide (each receives every event it subscribed to): each test has a platform of its own
pytestmark = pytest.mark.own_platform


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def events_for(receiver: Receiver, secret: str, customer_id: str, wanted: set[str], timeout: float = 20):
    """Waits until the customer's events include every wanted type; returns them by type (verified)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, list[dict[str, Any]]] = {}
        for received in receiver.received:
            event = partner_verify(secret, received.headers, received.body)
            if event["data"]["customer_id"] == customer_id:
                EVENT_MODELS[event["type"]].model_validate(event["data"])  # the contract's shape
                found.setdefault(event["type"], []).append(event["data"])
        if wanted <= set(found):
            return found
        assert time.monotonic() < deadline, (wanted - set(found), sorted(found))
        await asyncio.sleep(0.1)


async def test_purchases_points_and_tiers_send_their_events(
    platform: Platform, admin: httpx.AsyncClient, receivers: Receivers, endpoints: EndpointFactory, database_url: str
) -> None:
    receiver = await receivers()
    endpoint = await endpoints(receiver.url, list(EVENT_MODELS))
    customer, purchase_id = uid("wh-buyer"), uid("order")
    purchase = {
        "purchase_id": purchase_id,
        "customer_id": customer,
        "email": "buyer@example.com",
        "occurred_at": datetime.now(UTC).isoformat(),
        "currency": "EUR",
        "total": "1200.00",
        "items": [{"product_id": "p1", "name": "Sofa", "category": "home", "unit_price": "1200.00", "quantity": 1}],
    }
    assert (await admin.post("/v1/purchases", json=purchase)).status_code == 202
    found = await events_for(
        receiver, endpoint["secret"], customer, {"purchase.accepted", "points.earned", "tier.changed"}
    )
    (accepted,) = found["purchase.accepted"]
    assert accepted["purchase"]["purchase_id"] == purchase_id and accepted["purchase"]["total"] == "1200.00"
    assert "email" not in accepted["purchase"]
    (earned,) = found["points.earned"]
    assert earned["transaction"]["points"] == 1200 and earned["transaction"]["reference"] == purchase_id
    assert found["tier.changed"] == [
        {"customer_id": customer, "previous_tier": "bronze", "tier": "silver", "qualifying_points": 1200}
    ]

    redeemed = await admin.post(
        f"/v1/customers/{customer}/points/redemptions", json={"points": 100, "reference": uid("checkout")}
    )
    assert redeemed.status_code == 201, redeemed.text
    refund = await admin.post(f"/v1/purchases/{purchase_id}/refunds", json={"refund_id": uid("refund")})
    assert refund.status_code == 202, refund.text
    found = await events_for(
        receiver, endpoint["secret"], customer, {"points.redeemed", "purchase.refunded", "points.reversed"}
    )
    assert found["points.redeemed"][0]["transaction"]["points"] == -100
    assert found["purchase.refunded"][0]["refund"]["full_refund"] is True
    assert found["points.reversed"][0]["transaction"]["points"] == -1200
    assert len(found["tier.changed"]) == 2 and found["tier.changed"][1]["tier"] == "bronze"

    # expiry: back-date the customer's remaining lot, then run the expiry
    earn = await admin.post(f"/v1/customers/{customer}/points/earn", json={"points": 500, "reference": uid("gift")})
    assert earn.status_code == 201, earn.text
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "points"})
    try:
        await connection.execute(
            "UPDATE lots SET expires_at = now() - interval '1 minute' WHERE customer_id = $1 AND remaining > 0",
            customer,
        )
    finally:
        await connection.close()
    assert (await admin.post("/v1/points/expiry-runs")).status_code == 201
    found = await events_for(receiver, endpoint["secret"], customer, {"points.expired"})
    assert found["points.expired"][0]["transaction"]["type"] == "expire"


async def test_coupons_send_issued_and_redeemed(
    platform: Platform, admin: httpx.AsyncClient, receivers: Receivers, endpoints: EndpointFactory
) -> None:
    receiver = await receivers()
    endpoint = await endpoints(receiver.url, ["coupon.issued", "coupon.redeemed"])
    customer = uid("wh-coupon")
    campaign = await admin.post(
        "/v1/coupon-campaigns",
        json={"name": uid("wh"), "discount": {"type": "percent", "value": "10"}, "code": {"length": 14}},
    )
    assert campaign.status_code == 201, campaign.text
    issued = await admin.post(f"/v1/coupon-campaigns/{campaign.json()['id']}/issuances", json={"customer_id": customer})
    assert issued.status_code == 201, issued.text
    code = issued.json()["code"]
    order = {"customer_id": customer, "order_id": uid("o"), "order_total": "50.00", "currency": "EUR"}
    redeemed = await admin.post(f"/v1/coupons/{code}/redemptions", json=order)
    assert redeemed.status_code == 201, redeemed.text
    assert (await admin.post(f"/v1/coupons/{code}/redemptions", json=order)).status_code == 201  # a replay
    found = await events_for(receiver, endpoint["secret"], customer, {"coupon.issued", "coupon.redeemed"})
    assert found["coupon.issued"][0]["coupon"]["code"] == code
    assert found["coupon.redeemed"][0]["redemption"]["redemption_id"] == redeemed.json()["redemption_id"]
    await asyncio.sleep(0.5)
    found = await events_for(receiver, endpoint["secret"], customer, {"coupon.redeemed"})
    assert len(found["coupon.redeemed"]) == 1  # the replay changed nothing, sent nothing


async def test_surveys_send_answered_and_detractor(
    platform: Platform, admin: httpx.AsyncClient, receivers: Receivers, endpoints: EndpointFactory, mailbox: Mailbox
) -> None:
    receiver = await receivers()
    endpoint = await endpoints(receiver.url, ["survey.answered", "survey.detractor"])
    customer, email = uid("wh-survey"), f"{uuid.uuid4().hex[:12]}@example.com"
    survey = await create_survey(admin, reward_points=None)
    assert (await invite(admin, survey["id"], customer, email)).status_code == 201
    _, token = links((await mailbox.wait_for(email))[0])
    answers = [{"question_id": "nps", "value": 3}, {"question_id": "why", "value": "Late delivery"}]
    response = await admin.post("/v1/survey-responses", json={"token": token, "answers": answers})
    assert response.status_code == 201, response.text
    found = await events_for(receiver, endpoint["secret"], customer, {"survey.answered", "survey.detractor"})
    (answered,) = found["survey.answered"]
    assert answered["response"]["survey_id"] == survey["id"] and answered["response"]["answers"] == answers
    assert found["survey.detractor"] == [
        {
            "customer_id": customer,
            "survey_id": survey["id"],
            "response_id": response.json()["response_id"],
            "score": 3,
        }
    ]


async def test_a_rolled_back_transaction_sends_nothing(
    platform: Platform, receivers: Receivers, endpoints: EndpointFactory, database_url: str
) -> None:
    receiver = await receivers()
    endpoint = await endpoints(receiver.url, ["points.earned"])
    database = Database(asyncpg_url(database_url), "points", pool_size=1)
    rolled_back, committed = uid("wh-rolled-back"), uid("wh-committed")

    def event(customer_id: str) -> PointsEarned:
        return PointsEarned.model_validate({**PointsEarned.sample, "customer_id": customer_id})

    try:
        try:
            async with database.transaction() as session:
                event_id = await publish_webhook(session, event(rolled_back))
                raise RuntimeError("the change failed after publishing")
        except RuntimeError:
            pass
        async with database.transaction() as session:
            await publish_webhook(session, event(committed))
    finally:
        await database.dispose()
    await events_for(receiver, endpoint["secret"], committed, {"points.earned"})
    await asyncio.sleep(0.5)
    customers = {r.json["data"]["customer_id"] for r in receiver.received}
    assert rolled_back not in customers
    assert all(r.id != f"msg_{event_id.hex}" for r in receiver.received)


async def test_rewards_send_reward_redeemed_and_points_redeemed(
    admin: httpx.AsyncClient, receivers: Receivers, endpoints: EndpointFactory
) -> None:
    receiver = await receivers()
    endpoint = await endpoints(receiver.url, ["reward.redeemed", "points.redeemed"])
    customer = uid("wh-reward")
    reward = await admin.post("/v1/rewards", json={"name": "Tote bag", "kind": "item", "cost_points": 120})
    assert reward.status_code == 201, reward.text
    earned = await admin.post(f"/v1/customers/{customer}/points/earn", json={"points": 500, "reference": uid("e")})
    assert earned.status_code == 201, earned.text
    redeemed = await admin.post(
        f"/v1/customers/{customer}/reward-redemptions", json={"reward_id": reward.json()["id"], "reference": uid("r")}
    )
    assert redeemed.status_code == 201, redeemed.text
    found = await events_for(receiver, endpoint["secret"], customer, {"reward.redeemed", "points.redeemed"})
    assert found["reward.redeemed"] == [
        {
            "customer_id": customer,
            "redemption": {
                "redemption_id": redeemed.json()["redemption_id"],
                "reward_id": reward.json()["id"],
                "points": 120,
                "balance": 380,
                "status": "pending",
                "coupon_code": None,
            },
        }
    ]
    assert found["points.redeemed"][0]["transaction"]["points"] == -120
