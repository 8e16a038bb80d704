"""Each lever with a holdout: the treatment gets the reward, the holdout does not, and both are recorded alike
(same trigger, same time) so the report counts them the same way."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Platform
from tests.experiments.helpers import customers_by_arm, eventually, results, start, uid, wait_exposed
from tests.experiments.test_api import coupon_rule
from tests.loop.helpers import purchase_body, wait_for_deliveries
from tests.points.test_rewards import create_reward
from tests.support.mail import Mailbox
from tests.survey.conftest import create_survey, links


async def _buy(admin: httpx.AsyncClient, customers: list[str], total: str = "40.00") -> dict[str, dict[str, Any]]:
    """Each customer's purchase, by customer."""
    bodies = {}
    for customer in customers:
        body = purchase_body(customer, total=total)
        assert (await admin.post("/v1/purchases", json=body)).status_code == 202
        bodies[customer] = body
    await asyncio.gather(*(wait_for_deliveries(admin, b["purchase_id"]) for b in bodies.values()))
    return bodies


@pytest.mark.own_platform  # its lever fires on every purchase: no other test may see it
async def test_surprise_coupon_rule(admin: httpx.AsyncClient) -> None:
    rule = await coupon_rule(admin, n=1)
    experiment = await start(admin, "coupon_rule", rule["id"], holdout=50)
    arms = customers_by_arm(experiment, 4)
    await _buy(admin, arms["treatment"] + arms["holdout"])
    report = await wait_exposed(admin, experiment["id"], 8)
    for arm, expect in (("treatment", 1), ("holdout", 0)):
        for customer in arms[arm]:
            wallet = (await admin.get(f"/v1/customers/{customer}/coupons")).json()["items"]
            assert len([c for c in wallet if c["campaign_id"] == rule["campaign_id"]]) == expect, (arm, customer)
    assert report["arms"]["treatment"]["rewards_given"] == 4 and report["arms"]["treatment"]["rewards_withheld"] == 0
    assert report["arms"]["holdout"]["rewards_given"] == 0 and report["arms"]["holdout"]["rewards_withheld"] == 4

    # a treatment customer redeems the coupon: the discount is the reward's cost
    customer = arms["treatment"][0]
    [coupon] = (await admin.get(f"/v1/customers/{customer}/coupons")).json()["items"]
    redeemed = await admin.post(
        f"/v1/coupons/{coupon['code']}/redemptions",
        json={"customer_id": customer, "order_id": uid("o"), "order_total": "80.00", "currency": "GBP"},
    )
    assert redeemed.status_code == 201, redeemed.text

    async def costed() -> bool:
        return (await results(admin, experiment["id"]))["arms"]["treatment"]["reward_cost_money"] == "8.00"

    await eventually(costed, what="the redeemed discount as a cost")
    await admin.post(f"/v1/experiments/{experiment['id']}/stop")


@pytest.mark.own_platform  # its lever fires on every purchase: no other test may see it
async def test_gift_rule(admin: httpx.AsyncClient, database_url: str) -> None:
    reward = await create_reward(admin, name=uid("Thank-you tea "), cost_points=300, stock=100)
    created = await admin.post(
        "/v1/coupon-rules",
        json={
            "reward_id": reward["id"],
            "trigger": {"type": "order_total_at_least", "amount": "4000.00", "currency": "GBP"},
        },
    )
    assert created.status_code == 201, created.text
    rule = created.json()
    # a gift rule is the lever `reward`, not `coupon_rule`
    wrong = await admin.post(
        "/v1/experiments",
        json={"name": "x", "lever": {"type": "coupon_rule", "id": rule["id"]}, "holdout_percent": 50},
    )
    assert wrong.status_code == 422 and wrong.json()["code"] == "lever_not_found", wrong.text
    experiment = await start(admin, "reward", rule["id"], holdout=50)
    arms = customers_by_arm(experiment, 3)
    bought = await _buy(admin, arms["treatment"] + arms["holdout"], total="4321.00")

    async def granted() -> bool:
        for customer in arms["treatment"]:
            items = (await admin.get(f"/v1/customers/{customer}/reward-redemptions")).json()["items"]
            if [(g["reward_id"], g["source"], g["points"]) for g in items] != [(reward["id"], "gift", 0)]:
                return False
        return True

    await eventually(granted, what="the treatment's gifts")
    for customer in arms["holdout"]:
        assert (await admin.get(f"/v1/customers/{customer}/reward-redemptions")).json()["items"] == []
    assert (await admin.get(f"/v1/rewards/{reward['id']}")).json()["stock_left"] == 97

    report: dict[str, Any] = {}

    async def costed() -> bool:
        nonlocal report
        report = await results(admin, experiment["id"])
        return report["arms"]["treatment"]["reward_cost_points"] == 900

    # each gift costs the experiment the catalogue item's price in points
    await eventually(costed, what="the gifts' cost")
    treatment, holdout = report["arms"]["treatment"], report["arms"]["holdout"]
    assert (treatment["customers_exposed"], treatment["rewards_given"], treatment["rewards_withheld"]) == (3, 3, 0)
    assert (holdout["customers_exposed"], holdout["rewards_given"], holdout["rewards_withheld"]) == (3, 0, 3)
    assert holdout["reward_cost_points"] == 0

    # the lever's record: a withheld gift exactly as a given one, with the trigger's key and business time
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT customer_id, key, occurred_at, arm, withheld FROM coupon.experiment_rewards "
            "WHERE experiment_id = $1 AND exposes",
            uuid.UUID(experiment["id"]),
        )
    finally:
        await connection.close()
    recorded = {r["customer_id"]: (r["key"], r["occurred_at"], r["arm"], r["withheld"]) for r in rows}
    assert recorded == {
        customer: (
            f"purchase:{body['purchase_id']}",
            datetime.fromisoformat(body["occurred_at"]),
            arm,
            arm == "holdout",
        )
        for arm in ("treatment", "holdout")
        for customer, body in bought.items()
        if customer in arms[arm]
    }

    # the rule cannot be deactivated while its experiment runs
    refused = await admin.patch(f"/v1/coupon-rules/{rule['id']}", json={"active": False})
    assert refused.status_code == 409 and refused.json()["code"] == "lever_in_experiment"
    # and can once it is stopped
    await admin.post(f"/v1/experiments/{experiment['id']}/stop")
    assert (await admin.patch(f"/v1/coupon-rules/{rule['id']}", json={"active": False})).status_code == 200


@pytest.mark.own_platform  # its lever fires on every purchase: no other test may see it
async def test_points_bonus_campaign(admin: httpx.AsyncClient) -> None:
    before = (await admin.get("/v1/points/rules")).json()
    now = datetime.now(UTC)
    name = uid("bonus")
    campaign = {
        "name": name,
        "bonus_points": 25,
        "starts_at": (now - timedelta(hours=2)).isoformat(),
        "ends_at": (now + timedelta(hours=2)).isoformat(),
    }
    rules = {**before, "bonus_campaigns": [*before["bonus_campaigns"], campaign]}
    assert (await admin.put("/v1/points/rules", json=rules)).status_code == 200
    experiment = await start(admin, "bonus_campaign", name, holdout=50)
    arms = customers_by_arm(experiment, 3)
    await _buy(admin, arms["treatment"] + arms["holdout"])
    balances = {
        c: (await admin.get(f"/v1/customers/{c}/points")).json()["balance"] for c in arms["treatment"] + arms["holdout"]
    }
    treated = {balances[c] for c in arms["treatment"]}
    held = {balances[c] for c in arms["holdout"]}
    assert len(treated) == 1 and len(held) == 1 and treated.pop() - held.pop() == 25, balances
    report = await wait_exposed(admin, experiment["id"], 6)
    assert report["arms"]["treatment"]["reward_cost_points"] == 75
    assert report["arms"]["holdout"]["reward_cost_points"] == 0
    assert report["arms"]["holdout"]["rewards_withheld"] == 3

    # the campaign cannot be removed while its experiment runs
    removed = await admin.put("/v1/points/rules", json=before)
    assert removed.status_code == 409 and removed.json()["code"] == "lever_in_experiment"
    await admin.post(f"/v1/experiments/{experiment['id']}/stop")
    assert (await admin.put("/v1/points/rules", json=before)).status_code == 200


async def _answer(admin: httpx.AsyncClient, token: str) -> None:
    body = {"token": token, "answers": [{"question_id": "nps", "value": 9}, {"question_id": "csat", "value": 5}]}
    response = await admin.post("/v1/survey-responses", json=body)
    assert response.status_code == 201, response.text


async def test_survey_reward(admin: httpx.AsyncClient, platform: Platform, mailbox: Mailbox) -> None:
    survey = await create_survey(admin, reward_points=50)
    experiment = await start(admin, "survey_reward", survey["id"], holdout=50)
    arms = customers_by_arm(experiment, 2)
    tokens: dict[str, str] = {}
    for customer in arms["treatment"] + arms["holdout"]:
        email = f"{customer}@example.com"
        invited = await admin.post(
            f"/v1/surveys/{survey['id']}/invitations", json={"customer_id": customer, "email": email}
        )
        assert invited.status_code == 201, invited.text
        [message] = await mailbox.wait_for(email)
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        promised = customer in arms["treatment"]
        # the holdout's invitation still goes out, promising nothing
        assert ("50 points" in text) is promised and ("50 points" in html) is promised
        _, tokens[customer] = links(message)
        async with httpx.AsyncClient(base_url=platform.gateway_url) as public:
            page = await public.get(f"/s/{tokens[customer]}")
        assert page.status_code == 200 and ("points" in page.text) is promised
        form = (await admin.get(f"/v1/survey-invitations/{tokens[customer]}")).json()
        assert (form["reward_points"] == 50) is promised
    for token in tokens.values():
        await _answer(admin, token)

    async def rewarded() -> bool:
        balances = [(await admin.get(f"/v1/customers/{c}/points")).json()["balance"] for c in arms["treatment"]]
        return balances == [50, 50]

    await eventually(rewarded, what="the treatment's survey reward")
    for customer in arms["holdout"]:
        assert (await admin.get(f"/v1/customers/{customer}/points")).json()["balance"] == 0

    report: dict[str, Any] = {}

    async def reported() -> bool:
        nonlocal report
        report = await results(admin, experiment["id"])
        return report["arms"]["treatment"]["reward_cost_points"] == 100

    await eventually(reported, what="the survey reward's cost")
    assert report["arms"]["treatment"]["customers_exposed"] == 2
    assert report["arms"]["holdout"]["customers_exposed"] == 2
    assert report["arms"]["holdout"]["rewards_withheld"] == 2
    assert report["arms"]["holdout"]["reward_cost_points"] == 0
    await admin.post(f"/v1/experiments/{experiment['id']}/stop")
