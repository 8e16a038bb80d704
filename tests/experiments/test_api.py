"""Experiments through the gateway: create, list with status, assignments, stop; a lever cannot go while its
experiment runs; and the report's exact counts on a hand-built example."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from scipy import stats

from kit.experiments import assign_arm
from tests.conftest import INTERNAL_TOKEN, Platform
from tests.experiments.helpers import customers_by_arm, results, start, uid


async def coupon_rule(client: httpx.AsyncClient, n: int = 1) -> dict[str, Any]:
    campaign = await client.post(
        "/v1/coupon-campaigns",
        json={"name": uid("exp"), "discount": {"type": "percent", "value": "10"}, "code": {"length": 14}},
    )
    assert campaign.status_code == 201, campaign.text
    rule = await client.post(
        "/v1/coupon-rules", json={"campaign_id": campaign.json()["id"], "trigger": {"type": "nth_purchase", "n": n}}
    )
    assert rule.status_code == 201, rule.text
    return rule.json()  # type: ignore[no-any-return]


class TestLifecycle:
    @pytest.mark.own_platform(services=["coupon", "gateway"])  # its rule and running experiment are programme-wide
    async def test_create_list_assign_stop(self, admin: httpx.AsyncClient) -> None:
        rule = await coupon_rule(admin, n=97)
        experiment = await start(admin, "coupon_rule", rule["id"], holdout=20)
        assert experiment["status"] == "running"
        assert experiment["lever"] == {"type": "coupon_rule", "id": rule["id"]}

        for customer in ("17850", "12583", uid()):
            answer = await admin.get(f"/v1/experiments/{experiment['id']}/assignments/{customer}")
            assert answer.status_code == 200
            assert answer.json()["arm"] == assign_arm(experiment["id"], customer, 20)

        again = await admin.post(
            "/v1/experiments",
            json={"name": "second", "lever": {"type": "coupon_rule", "id": rule["id"]}, "holdout_percent": 10},
        )
        assert again.status_code == 409 and again.json()["code"] == "lever_in_experiment"

        # the lever cannot go while its experiment runs
        deactivate = await admin.patch(f"/v1/coupon-rules/{rule['id']}", json={"active": False})
        assert deactivate.status_code == 409 and deactivate.json()["code"] == "lever_in_experiment"

        running = (await admin.get("/v1/experiments", params={"status": "running", "limit": 200})).json()["items"]
        assert experiment["id"] in [e["id"] for e in running]

        stopped = await admin.post(f"/v1/experiments/{experiment['id']}/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        twice = await admin.post(f"/v1/experiments/{experiment['id']}/stop")
        assert twice.json()["stopped_at"] == stopped.json()["stopped_at"]
        listed = (await admin.get("/v1/experiments", params={"status": "stopped", "limit": 200})).json()["items"]
        assert experiment["id"] in [e["id"] for e in listed]
        assert (await admin.patch(f"/v1/coupon-rules/{rule['id']}", json={"active": False})).status_code == 200
        # a stopped experiment frees its lever for the next one
        await admin.patch(f"/v1/coupon-rules/{rule['id']}", json={"active": True})
        await start(admin, "coupon_rule", rule["id"])

    async def test_bad_requests_change_nothing(self, admin: httpx.AsyncClient, platform: Platform) -> None:
        unknown = await admin.post(
            "/v1/experiments",
            json={"name": "x", "lever": {"type": "coupon_rule", "id": str(uuid.uuid4())}, "holdout_percent": 10},
        )
        assert unknown.status_code == 422 and unknown.json()["code"] == "lever_not_found"
        for body in (
            {"name": "x", "lever": {"type": "coupon_rule", "id": "a"}, "holdout_percent": 0},
            {"name": "x", "lever": {"type": "coupon_rule", "id": "a"}, "holdout_percent": 91},
            {"name": "x", "lever": {"type": "magic", "id": "a"}, "holdout_percent": 10},
            {"name": "x", "lever": {"type": "coupon_rule", "id": "a"}, "holdout_percent": 10, "extra": 1},
            {
                "name": "x",
                "lever": {"type": "coupon_rule", "id": "a"},
                "holdout_percent": 10,
                "starts_at": "2026-01-02T00:00:00Z",
                "ends_at": "2026-01-01T00:00:00Z",
            },
        ):
            response = await admin.post("/v1/experiments", json=body)
            assert response.status_code == 422, (body, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        missing = uuid.uuid4()
        assert (await admin.get(f"/v1/experiments/{missing}")).status_code == 404
        assert (await admin.post(f"/v1/experiments/{missing}/stop")).status_code == 404
        assert (await admin.get(f"/v1/experiments/{missing}/results")).status_code == 404
        # not for partners without the admin scope, nor for customers
        key = await admin.post("/v1/api-keys", json={"name": "partner", "scopes": ["coupons:write"]})
        async with platform.client(key.json()["key"]) as partner:
            assert (await partner.get("/v1/experiments")).status_code == 403
        # the gateway's internal path does not exist without the internal token
        async with httpx.AsyncClient(base_url=platform.gateway_url) as anonymous:
            assert (await anonymous.post("/internal/events", json={})).status_code == 404


async def reward_event(
    client: httpx.AsyncClient, experiment: dict[str, Any], customer: str, at: datetime, **extra: Any
) -> None:
    """What a lever's service sends when it gives or withholds (through the outbox, here by hand)."""
    arm = assign_arm(experiment["id"], customer, experiment["holdout_percent"])
    payload = {
        "experiment_id": experiment["id"],
        "customer_id": customer,
        "arm": arm,
        "key": extra.pop("key", f"purchase:{uid()}"),
        "occurred_at": at.isoformat(),
        "exposes": True,
        "withheld": arm == "holdout",
        **extra,
    }
    event = {"id": str(uuid.uuid4()), "type": "experiment.reward", "occurred_at": at.isoformat(), "payload": payload}
    response = await client.post("/internal/events", json=event, headers={"X-Internal-Token": INTERNAL_TOKEN})
    assert response.status_code == 200, response.text


async def purchase(client: httpx.AsyncClient, customer: str, at: datetime, total: str) -> None:
    body = {
        "purchase_id": uid("p"),
        "customer_id": customer,
        "occurred_at": at.isoformat(),
        "currency": "GBP",
        "total": total,
        "items": [
            {"product_id": "22423", "name": "Cakestand", "category": "Kitchen", "unit_price": total, "quantity": 1}
        ],
    }
    assert (await client.post("/v1/purchases", json=body)).status_code == 202


class TestResults:
    @pytest.mark.own_platform(services=["coupon", "gateway"])  # its rule and running experiment are programme-wide
    async def test_exact_counts_on_a_hand_built_example(self, admin: httpx.AsyncClient, platform: Platform) -> None:
        rule = await coupon_rule(admin, n=98)
        experiment = await start(admin, "coupon_rule", rule["id"], holdout=50)
        arms = customers_by_arm(experiment, 3)
        (a, b, c), (d, e, f) = arms["treatment"], arms["holdout"]
        t0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
        day = timedelta(days=1)
        async with httpx.AsyncClient(base_url=platform.gateway_url) as internal:
            for customer in (a, b, c, d, e, f):
                await reward_event(internal, experiment, customer, t0, points=10)
            # a second firing for `a` later does not move its exposure; an earlier one for `d` does
            await reward_event(internal, experiment, a, t0 + 5 * day, points=10)
            await reward_event(internal, experiment, d, t0 - 2 * day, points=10)
            # a coupon's discount redeemed later is a cost, not an exposure
            await reward_event(internal, experiment, b, t0 + day, exposes=False, withheld=False, money="4.50")
        # treatment: a returns twice (day 1 and day 30: the window's last moment counts), then again on day 31 (not
        # counted); b bought only before and at the exposure (not counted); c never again
        await purchase(admin, a, t0 + day, "100.00")
        await purchase(admin, a, t0 + 30 * day, "20.00")
        await purchase(admin, a, t0 + 31 * day, "999.00")
        await purchase(admin, b, t0 - day, "50.00")
        await purchase(admin, b, t0, "50.00")
        # holdout: d is exposed at t0 - 2 days, so its purchase on day 27 is day 29 for it (counted), day 29 not;
        # e returns once; f never
        await purchase(admin, d, t0 + 27 * day, "10.00")
        await purchase(admin, d, t0 + 29 * day, "7.00")
        await purchase(admin, e, t0 + 2 * day, "30.00")

        report = await results(admin, experiment["id"], window_days=30)
        treatment, holdout = report["arms"]["treatment"], report["arms"]["holdout"]
        assert treatment == {
            "customers_exposed": 3,
            "customers_returned": 1,
            "repeat_rate": round(1 / 3, 6),
            "purchases": 2,
            "revenue": "120.00",
            "revenue_per_customer": "40.00",
            "reward_cost_points": 40,
            "reward_cost_money": "4.50",
            "rewards_given": 4,
            "rewards_withheld": 0,
        }
        assert holdout == {
            "customers_exposed": 3,
            "customers_returned": 2,
            "repeat_rate": round(2 / 3, 6),
            "purchases": 2,
            "revenue": "40.00",
            "revenue_per_customer": "13.33",
            "reward_cost_points": 0,
            "reward_cost_money": "0.00",
            "rewards_given": 0,
            "rewards_withheld": 4,
        }
        repeat = report["lift"]["repeat_rate"]
        assert abs(repeat["absolute"] - (1 / 3 - 2 / 3)) < 1e-6
        assert abs(repeat["relative"] - (-0.5)) < 1e-6
        pooled = 0.5
        z = (1 / 3 - 2 / 3) / (pooled * pooled * (2 / 3)) ** 0.5
        assert abs(repeat["p_value"] - 2 * stats.norm.sf(abs(z))) < 1e-6
        revenue = report["lift"]["revenue_per_customer"]
        welch = stats.ttest_ind([120, 0, 0], [10, 30, 0], equal_var=False)
        assert abs(revenue["p_value"] - welch.pvalue) < 1e-6
        low, high = welch.confidence_interval(0.95)
        assert abs(revenue["ci95"][0] - low) < 1e-5 and abs(revenue["ci95"][1] - high) < 1e-5
        assert abs(revenue["absolute"] - (40 - 40 / 3)) < 1e-6
        # no lift, no cost per extra customer
        assert report["cost_per_extra_returning_customer"]["points"] is None
        assert "no significant lift" in report["conclusion"].lower()

        shorter = await results(admin, experiment["id"], window_days=1)
        assert shorter["arms"]["treatment"]["customers_returned"] == 1
        assert shorter["arms"]["holdout"]["customers_returned"] == 0


@pytest.mark.own_platform(services=["coupon", "gateway"])  # its rule and running experiment are programme-wide
async def test_results_do_not_depend_on_the_order_events_arrive(admin: httpx.AsyncClient, platform: Platform) -> None:
    """A replay can store a customer's purchases before the reward that exposed them, and an earlier trigger can
    arrive after a later one: the results are those of the exposure's final time, whatever the order."""
    rule = await coupon_rule(admin, n=95)
    experiment = await start(admin, "coupon_rule", rule["id"], holdout=50)
    customer = uid("late")
    arm = assign_arm(experiment["id"], customer, 50)
    t0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
    day = timedelta(days=1)
    await purchase(admin, customer, t0 + 3 * day, "25.00")
    await purchase(admin, customer, t0 + 10 * day, "70.00")

    async def returned(window: int) -> tuple[int, int, str]:
        found = (await results(admin, experiment["id"], window_days=window))["arms"][arm]
        return found["customers_returned"], found["purchases"], found["revenue"]

    async with httpx.AsyncClient(base_url=platform.gateway_url) as internal:
        await reward_event(internal, experiment, customer, t0)
        assert await returned(10) == (1, 2, "95.00")
        assert await returned(9) == (1, 1, "25.00")
        # an earlier trigger arrives: the exposure moves to t0 - 5 days, the purchases are now days 8 and 15
        await reward_event(internal, experiment, customer, t0 - 5 * day)
    assert await returned(10) == (1, 1, "25.00")
    assert await returned(7) == (0, 0, "0.00")
    # a purchase stored after the exposure is counted at once
    await purchase(admin, customer, t0 - 4 * day, "5.00")
    assert await returned(1) == (1, 1, "5.00")
    assert await returned(15) == (1, 3, "100.00")
    await admin.post(f"/v1/experiments/{experiment['id']}/stop")


@pytest.mark.own_platform(services=["coupon", "gateway"])  # its rule and running experiment are programme-wide
async def test_an_orphan_attachment_gives_way_to_the_gateways_next_experiment(
    admin: httpx.AsyncClient, platform: Platform
) -> None:
    """A service can hold an experiment the gateway never committed (its commit failed after the attach): the
    gateway's registry is the truth, so the next experiment on that lever ends the orphan instead of being refused."""
    rule = await coupon_rule(admin, n=96)
    orphan = {
        "lever": {"type": "coupon_rule", "id": rule["id"]},
        "holdout_percent": 50,
        "starts_at": "2026-01-01T00:00:00Z",
    }
    async with platform.service_client("coupon") as coupon:
        attached = await coupon.put(f"/internal/experiments/{uuid.uuid4()}", json=orphan)
        assert attached.status_code == 200, attached.text
    blocked = await admin.patch(f"/v1/coupon-rules/{rule['id']}", json={"active": False})
    assert blocked.status_code == 409
    experiment = await start(admin, "coupon_rule", rule["id"])
    await admin.post(f"/v1/experiments/{experiment['id']}/stop")
    # neither the orphan nor the stopped experiment holds the lever any more
    assert (await admin.patch(f"/v1/coupon-rules/{rule['id']}", json={"active": False})).status_code == 200
