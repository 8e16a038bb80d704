"""The rewards catalogue: the catalogue, redemptions exact under concurrency (stock, limits, balances), tiers,
idempotent repeats, fulfilment, cancellation once (lots and stock back), the customer's view and the ledger."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Platform
from tests.points.conftest import audit_clean, balance, earn, ledger, new_id
from tests.points.test_gateway_access import customer_token


async def create_reward(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": new_id("Tote bag "), "kind": "item", "cost_points": 100, **overrides}
    response = await client.post("/v1/rewards", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def redeem(client: httpx.AsyncClient, customer: str, reward_id: str, reference: str) -> httpx.Response:
    return await client.post(
        f"/v1/customers/{customer}/reward-redemptions", json={"reward_id": reward_id, "reference": reference}
    )


@pytest.fixture
async def wide(platform: Platform) -> Any:
    """Straight to the service, with room for real concurrency."""
    async with httpx.AsyncClient(
        base_url=platform.urls["points"],
        headers={"X-Internal-Token": platform.env["LOYALTY_INTERNAL_TOKEN"]},
        limits=httpx.Limits(max_connections=100),
        timeout=60,
    ) as client:
        yield client


class TestCatalogue:
    async def test_create_read_patch_and_list(self, admin: httpx.AsyncClient) -> None:
        reward = await create_reward(
            admin, description="Organic cotton", stock=10, per_customer_limit=2, image_url="https://img.test/t.png"
        )
        assert reward["stock_left"] == 10 and reward["active"] is True and reward["min_tier"] is None
        assert (await admin.get(f"/v1/rewards/{reward['id']}")).json() == reward
        patched = await admin.patch(f"/v1/rewards/{reward['id']}", json={"cost_points": 150, "stock": 12})
        assert patched.status_code == 200, patched.text
        assert (patched.json()["cost_points"], patched.json()["stock"], patched.json()["stock_left"]) == (150, 12, 12)
        listed = (await admin.get("/v1/rewards", params={"limit": 200})).json()["items"]
        assert reward["id"] in {r["id"] for r in listed}
        costs = [r["cost_points"] for r in listed]
        assert costs == sorted(costs)

    @pytest.mark.parametrize(
        "body",
        [
            {"name": "x", "kind": "coupon", "cost_points": 10},  # no campaign
            {"name": "x", "kind": "item", "cost_points": 10, "campaign_id": "5b0a2c8e-6b8f-4a53-9f2c-2b7a8e9b1c3d"},
            {"name": "x", "kind": "item", "cost_points": 0},
            {"name": "x", "kind": "item", "cost_points": "10"},
            {"name": "", "kind": "item", "cost_points": 10},
            {"name": "x", "kind": "gift", "cost_points": 10},
            {"name": "x", "kind": "item", "cost_points": 10, "stock": -1},
            {"name": "x", "kind": "item", "cost_points": 10, "min_tier": "platinum"},
            {"name": "x", "kind": "item", "cost_points": 10, "image_url": "javascript:alert(1)"},
            {"name": "x", "kind": "item", "cost_points": 10, "surprise": True},
        ],
    )
    async def test_bad_input_is_422(self, admin: httpx.AsyncClient, body: dict[str, Any]) -> None:
        response = await admin.post("/v1/rewards", json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"

    async def test_only_the_admin_manages_the_catalogue(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        reward = await create_reward(admin)
        key = await admin.post("/v1/api-keys", json={"name": new_id("k"), "scopes": ["points:read", "points:write"]})
        async with platform.client(key.json()["key"]) as partner:
            assert (
                await partner.post("/v1/rewards", json={"name": "x", "kind": "item", "cost_points": 1})
            ).status_code == 403
            assert (await partner.patch(f"/v1/rewards/{reward['id']}", json={"active": False})).status_code == 403
            assert (await partner.get(f"/v1/rewards/{reward['id']}")).status_code == 200
        async with platform.client(await customer_token(admin, new_id())) as customer:
            assert (await customer.get(f"/v1/rewards/{reward['id']}")).status_code == 200
            assert (await customer.patch(f"/v1/rewards/{reward['id']}", json={"active": False})).status_code == 403

    async def test_stock_cannot_go_below_what_is_redeemed(self, points: httpx.AsyncClient) -> None:
        reward = await create_reward(points, cost_points=10)  # unlimited
        customer = new_id()
        await earn(points, customer, 100)
        for n in range(3):
            assert (await redeem(points, customer, reward["id"], f"r{n}")).status_code == 201
        refused = await points.patch(f"/v1/rewards/{reward['id']}", json={"stock": 2})
        assert refused.status_code == 422, refused.text
        limited = (await points.patch(f"/v1/rewards/{reward['id']}", json={"stock": 4})).json()
        assert (limited["stock"], limited["stock_left"]) == (4, 1)
        assert (await redeem(points, customer, reward["id"], "r3")).status_code == 201
        assert (await redeem(points, customer, reward["id"], "r4")).json()["code"] == "out_of_stock"
        unlimited = (await points.patch(f"/v1/rewards/{reward['id']}", json={"stock": None})).json()
        assert (unlimited["stock"], unlimited["stock_left"]) == (None, None)
        assert (await redeem(points, customer, reward["id"], "r4")).status_code == 201


class TestRedemption:
    async def test_an_item_is_pending_and_in_the_ledger_with_its_name(self, points: httpx.AsyncClient) -> None:
        reward = await create_reward(points, name="Tote bag", cost_points=120, stock=3)
        customer = new_id()
        await earn(points, customer, 500)
        response = await redeem(points, customer, reward["id"], "order-7")
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["reward_id"], body["points"], body["balance"], body["status"]) == (
            reward["id"],
            120,
            380,
            "pending",
        )
        assert body["coupon_code"] is None
        entry = (await ledger(points, customer))[-1]
        assert (entry["type"], entry["points"], entry["description"]) == ("redeem", -120, "Reward: Tote bag")
        assert entry["reward"] == {
            "redemption_id": body["redemption_id"], "reward_id": reward["id"], "name": "Tote bag", "status": "pending"
        }  # fmt: skip
        assert (await points.get(f"/v1/rewards/{reward['id']}")).json()["stock_left"] == 2
        listed = (await points.get(f"/v1/customers/{customer}/reward-redemptions")).json()["items"]
        assert [(r["redemption_id"], r["reward_name"], r["status"], r["source"]) for r in listed] == [
            (body["redemption_id"], "Tote bag", "pending", "customer")
        ]
        await audit_clean(points)

    async def test_a_repeated_reference_changes_nothing(self, points: httpx.AsyncClient) -> None:
        reward = await create_reward(points, cost_points=50, stock=5)
        other = await create_reward(points, cost_points=50)
        customer = new_id()
        await earn(points, customer, 200)
        first = await redeem(points, customer, reward["id"], "same")
        again = await redeem(points, customer, reward["id"], "same")
        assert again.status_code == 201 and again.json() == first.json()
        assert (await redeem(points, customer, other["id"], "same")).json()["code"] == "reference_already_used"
        assert (await balance(points, customer))["balance"] == 150
        assert (await points.get(f"/v1/rewards/{reward['id']}")).json()["stock_left"] == 4
        keyed = [
            await points.post(
                f"/v1/customers/{customer}/reward-redemptions",
                json={"reward_id": reward["id"], "reference": "keyed"},
                headers={"Idempotency-Key": "k-1"},
            )
            for _ in range(2)
        ]
        assert keyed[1].headers.get("idempotent-replayed") == "true"
        assert keyed[0].json() == keyed[1].json()
        assert (await balance(points, customer))["balance"] == 100

    @pytest.mark.own_platform(services=["points"])
    async def test_refusals(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        await earn(points, customer, 60)
        cheap = await create_reward(points, cost_points=50)
        dear = await create_reward(points, cost_points=61)
        inactive = await create_reward(points, cost_points=1, active=False)
        gold = await create_reward(points, cost_points=1, min_tier="gold")
        refused = await redeem(points, customer, dear["id"], "a")
        assert (refused.status_code, refused.json()["code"], refused.json()["balance"]) == (
            409,
            "insufficient_points",
            60,
        )
        refused = await redeem(points, customer, inactive["id"], "b")
        assert (refused.status_code, refused.json()["code"], refused.json()["reason"]) == (
            422, "reward_not_available", "inactive"
        )  # fmt: skip
        refused = await redeem(points, customer, gold["id"], "c")
        assert (refused.status_code, refused.json()["reason"]) == (422, "tier_too_low")
        unknown = await redeem(points, customer, "5b0a2c8e-6b8f-4a53-9f2c-2b7a8e9b1c3d", "d")
        assert (unknown.status_code, unknown.json()["code"]) == (404, "reward_not_found")
        assert (await balance(points, customer))["balance"] == 60
        # a tier reached by earning opens it; tiers come from the rules in force
        tiers = [{"name": "bronze", "threshold": 0}, {"name": "gold", "threshold": 100}]
        assert (await points.put("/v1/points/tiers", json=tiers)).status_code == 200
        await earn(points, customer, 40)
        assert (await redeem(points, customer, gold["id"], "c2")).status_code == 201
        assert (await redeem(points, customer, cheap["id"], "e")).status_code == 201
        assert (await balance(points, customer))["balance"] == 49


@pytest.mark.real_commits
class TestConcurrency:
    async def test_a_scarce_reward_goes_to_exactly_its_stock(self, wide: httpx.AsyncClient) -> None:
        reward = await create_reward(wide, cost_points=10, stock=5)
        customers = [new_id() for _ in range(40)]
        await asyncio.gather(*(earn(wide, c, 25) for c in customers))
        responses = await asyncio.gather(*(redeem(wide, c, reward["id"], "r") for c in customers))
        statuses = [r.status_code for r in responses]
        assert statuses.count(201) == 5, statuses
        assert {r.json()["code"] for r in responses if r.status_code != 201} == {"out_of_stock"}
        assert (await wide.get(f"/v1/rewards/{reward['id']}")).json()["stock_left"] == 0
        balances = [b["balance"] for b in await asyncio.gather(*(balance(wide, c) for c in customers))]
        assert sorted(balances) == [15] * 5 + [25] * 35
        await audit_clean(wide)

    async def test_a_limit_and_a_balance_hold_under_concurrency(self, wide: httpx.AsyncClient) -> None:
        limited = await create_reward(wide, cost_points=10, per_customer_limit=2)
        customer = new_id()
        await earn(wide, customer, 1000)
        responses = await asyncio.gather(*(redeem(wide, customer, limited["id"], f"l{n}") for n in range(20)))
        assert [r.status_code for r in responses].count(201) == 2
        assert {r.json()["code"] for r in responses if r.status_code != 201} == {"reward_limit_reached"}
        dear = await create_reward(wide, cost_points=300)
        responses = await asyncio.gather(*(redeem(wide, customer, dear["id"], f"d{n}") for n in range(20)))
        assert [r.status_code for r in responses].count(201) == 3  # 980 points buy three
        assert (await balance(wide, customer))["balance"] == 80
        await audit_clean(wide)


class TestFulfilmentAndCancellation:
    async def test_fulfil_then_only_the_shop_may_cancel(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        reward = await create_reward(admin, cost_points=40, stock=2)
        customer = new_id()
        await earn(admin, customer, 100)
        async with platform.client(await customer_token(admin, customer)) as me:
            redeemed = await redeem(me, customer, reward["id"], "r1")
            assert redeemed.status_code == 201, redeemed.text
            redemption = redeemed.json()["redemption_id"]
            assert (await me.post(f"/v1/reward-redemptions/{redemption}/fulfilment")).status_code == 403
            done = await admin.post(f"/v1/reward-redemptions/{redemption}/fulfilment")
            assert (done.status_code, done.json()["status"]) == (200, "fulfilled")
            assert (await admin.post(f"/v1/reward-redemptions/{redemption}/fulfilment")).json()["status"] == "fulfilled"
            refused = await me.post(f"/v1/reward-redemptions/{redemption}/cancellation")
            assert (refused.status_code, refused.json()["code"]) == (409, "redemption_not_cancellable")
        returned = await admin.post(f"/v1/reward-redemptions/{redemption}/cancellation")
        assert (returned.status_code, returned.json()["status"]) == (200, "cancelled")
        assert (await balance(admin, customer))["balance"] == 100
        assert (await admin.get(f"/v1/rewards/{reward['id']}")).json()["stock_left"] == 2

    async def test_a_customer_cancels_its_own_pending_item_once(
        self, platform: Platform, admin: httpx.AsyncClient, wide: httpx.AsyncClient
    ) -> None:
        reward = await create_reward(admin, name="Mug", cost_points=30, stock=1)
        customer, stranger = new_id(), new_id()
        await earn(admin, customer, 100)
        redeemed = (await redeem(admin, customer, reward["id"], "mug")).json()
        redemption = redeemed["redemption_id"]
        async with platform.client(await customer_token(admin, stranger)) as other:
            assert (await other.post(f"/v1/reward-redemptions/{redemption}/cancellation")).status_code == 404
            assert (await other.get(f"/v1/customers/{customer}/reward-redemptions")).status_code == 404
            assert (await redeem(other, customer, reward["id"], "steal")).status_code == 404
        async with platform.client(await customer_token(admin, customer)) as me:
            path = f"/v1/reward-redemptions/{redemption}/cancellation"
            responses = await asyncio.gather(
                *(wide.post(path, headers={"X-Caller-Kind": "customer", "X-Caller-Id": customer}) for _ in range(10))
            )
            assert {r.status_code for r in responses} == {200}
            assert (await me.post(path)).json()["status"] == "cancelled"
        assert (await balance(admin, customer))["balance"] == 100
        assert (await admin.get(f"/v1/rewards/{reward['id']}")).json()["stock_left"] == 1
        entries = await ledger(admin, customer)
        assert [(e["type"], e["points"], e["description"]) for e in entries[1:]] == [
            ("redeem", -30, "Reward: Mug"), ("cancel", 30, "Reward cancelled: Mug")
        ]  # fmt: skip
        assert entries[-1]["reward"]["status"] == "cancelled"
        await audit_clean(admin)

    async def test_cancelling_never_makes_points_live_longer(
        self, points: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        """Points taken from a lot that has expired since come back and expire at once."""
        reward = await create_reward(points, cost_points=80)
        customer = new_id()
        await earn(points, customer, 50)
        await earn(points, customer, 50)
        redemption = (await redeem(points, customer, reward["id"], "r")).json()["redemption_id"]
        # the older lot (50, all taken) expires; the younger one gave 30 and keeps 20
        await db.execute(
            "UPDATE lots SET expires_at = now() - interval '1 day' WHERE id = "
            "(SELECT min(id) FROM lots WHERE customer_id = $1)",
            customer,
        )
        cancelled = await points.post(f"/v1/reward-redemptions/{redemption}/cancellation")
        assert cancelled.status_code == 200, cancelled.text
        assert (await balance(points, customer))["balance"] == 50
        entries = await ledger(points, customer)
        assert [(e["type"], e["points"]) for e in entries[2:]] == [("redeem", -80), ("cancel", 80), ("expire", -50)]
        assert (await points.post("/v1/points/expiry-runs")).json()["points_expired"] == 0
        await audit_clean(points)


class TestFulfilmentQueue:
    """`GET /v1/reward-redemptions?status=pending`: every customer's items waiting to be handed over."""

    async def test_pending_items_of_all_customers_newest_first_page_by_page(self, admin: httpx.AsyncClient) -> None:
        reward = await create_reward(admin, name="Queue mug", cost_points=10)
        customers = [new_id(), new_id(), new_id()]
        ours: list[str] = []
        for n, customer in enumerate(customers * 2):
            await earn(admin, customer, 10, reference=f"q{n}")
            redeemed = await redeem(admin, customer, reward["id"], f"queue-{n}")
            assert redeemed.status_code == 201, redeemed.text
            ours.append(redeemed.json()["redemption_id"])
        fulfilled, cancelled = ours[1], ours[4]
        assert (await admin.post(f"/v1/reward-redemptions/{fulfilled}/fulfilment")).status_code == 200
        assert (await admin.post(f"/v1/reward-redemptions/{cancelled}/cancellation")).status_code == 200
        waiting = [r for r in reversed(ours) if r not in (fulfilled, cancelled)]  # newest first

        first = await admin.get("/v1/reward-redemptions", params={"status": "pending", "limit": 2})
        assert first.status_code == 200, first.text
        assert [r["redemption_id"] for r in first.json()["items"]] == waiting[:2]
        assert first.json()["items"][0]["customer_id"] == customers[2]
        assert first.json()["items"][0]["reward_name"] == "Queue mug"
        second = await admin.get(
            "/v1/reward-redemptions", params={"status": "pending", "limit": 2, "cursor": first.json()["next_cursor"]}
        )
        assert [r["redemption_id"] for r in second.json()["items"]] == waiting[2:4]

        # the whole queue, followed to its end: pending only, each once, newest first
        seen: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"status": "pending", "limit": 7}
            if cursor:
                params["cursor"] = cursor
            page = (await admin.get("/v1/reward-redemptions", params=params)).json()
            seen.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        ids = [r["redemption_id"] for r in seen]
        assert len(ids) == len(set(ids))
        assert {r["status"] for r in seen} == {"pending"}
        assert set(waiting) <= set(ids) and not {fulfilled, cancelled} & set(ids)
        keys = [(r["created_at"], r["redemption_id"]) for r in seen]
        assert keys == sorted(keys, reverse=True)

    @pytest.mark.parametrize(
        "params",
        [
            {},
            {"status": "fulfilled"},
            {"status": "pending", "cursor": "not-a-cursor"},
            {"status": "pending", "limit": 0},
        ],
    )
    async def test_bad_query_is_422(self, admin: httpx.AsyncClient, params: dict[str, Any]) -> None:
        response = await admin.get("/v1/reward-redemptions", params=params)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"

    async def test_keys_that_read_points_see_it_customers_do_not(
        self, platform: Platform, admin: httpx.AsyncClient
    ) -> None:
        pending = {"status": "pending"}
        reader = await admin.post("/v1/api-keys", json={"name": new_id("k"), "scopes": ["points:read"]})
        other = await admin.post("/v1/api-keys", json={"name": new_id("k"), "scopes": ["coupons:read"]})
        async with platform.client(reader.json()["key"]) as client:
            assert (await client.get("/v1/reward-redemptions", params=pending)).status_code == 200
        async with platform.client(other.json()["key"]) as client:
            assert (await client.get("/v1/reward-redemptions", params=pending)).status_code == 403
        customer = new_id()
        async with platform.client(await customer_token(admin, customer)) as client:
            assert (await client.get("/v1/reward-redemptions", params=pending)).status_code == 403
        # the service checks again: a customer's identity straight to it is refused too
        headers = {"X-Caller-Kind": "customer", "X-Caller-Id": customer}
        async with platform.service_client("points", **headers) as client:
            assert (await client.get("/v1/reward-redemptions", params=pending)).status_code == 403


class TestCustomerView:
    async def test_affordable_points_needed_and_why_not(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        customer = new_id()
        await earn(admin, customer, 100)
        base = 10_000_000 + (abs(hash(customer)) % 1000) * 1000  # a cost band of this test's own
        ok = await create_reward(admin, cost_points=base + 1)
        gone = await create_reward(admin, cost_points=base + 2, stock=0)
        tiered = await create_reward(admin, cost_points=base + 3, min_tier="gold")
        view = f"/v1/customers/{customer}/rewards"
        first = (await admin.get(view, params={"affordable": "false", "available": "false", "limit": 200})).json()
        assert {r["id"]: r["reason"] for r in first["items"]}.get(tiered["id"]) == "tier_too_low"
        await admin.post(f"/v1/customers/{customer}/points/earn", json={"points": base + 3, "reference": "big"})
        once = await create_reward(admin, cost_points=1, per_customer_limit=1)
        assert (await redeem(admin, customer, once["id"], "once")).status_code == 201
        async with platform.client(await customer_token(admin, customer)) as me:
            items: list[dict[str, Any]] = []
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
                page = (await me.get(f"/v1/customers/{customer}/rewards", params=params)).json()
                items += page["items"]
                cursor = page["next_cursor"]
                if not cursor:
                    break
            seen = {r["id"]: r for r in items}
            assert (seen[ok["id"]]["affordable"], seen[ok["id"]]["available"], seen[ok["id"]]["points_needed"]) == (
                True, True, 0
            )  # fmt: skip
            assert (seen[gone["id"]]["available"], seen[gone["id"]]["reason"]) == (False, "out_of_stock")
            assert (seen[tiered["id"]]["available"], seen[tiered["id"]]["affordable"]) == (True, True)
            assert (seen[once["id"]]["available"], seen[once["id"]]["reason"]) == (False, "limit_reached")
            closest = (
                await me.get(
                    f"/v1/customers/{customer}/rewards", params={"affordable": "false", "available": "true", "limit": 3}
                )
            ).json()["items"]
            needs = [r["points_needed"] for r in closest]
            assert needs == sorted(needs) and all(n > 0 for n in needs)
            assert all(not r["affordable"] and r["available"] for r in closest)
            assert (await me.get(f"/v1/customers/{new_id()}/rewards")).status_code == 404


async def test_liability_counts_pending_items_apart(points: httpx.AsyncClient) -> None:
    before = (await points.get("/v1/points/liability")).json()
    reward = await create_reward(points, cost_points=70)
    customer = new_id()
    await earn(points, customer, 100)
    redemption = (await redeem(points, customer, reward["id"], "r")).json()["redemption_id"]
    after = (await points.get("/v1/points/liability")).json()
    assert after["total_points"] - before["total_points"] == 30
    assert after["pending_reward_points"] - before["pending_reward_points"] == 70
    await points.post(f"/v1/reward-redemptions/{redemption}/fulfilment")
    done = (await points.get("/v1/points/liability")).json()
    assert done["pending_reward_points"] == before["pending_reward_points"]


async def test_the_overview_shows_the_rewards_closest_to_affordable(admin: httpx.AsyncClient) -> None:
    customer = new_id()
    base = 20_000_000 + (abs(hash(customer)) % 10_000) * 2_000  # a cost band of this test's own
    await admin.post(f"/v1/customers/{customer}/points/earn", json={"points": base, "reference": "big"})
    for extra in (1000, 40, 500, 100):
        await create_reward(admin, name=f"r{extra}", cost_points=base + extra)
    await create_reward(admin, name="gone", cost_points=base + 10, stock=0)  # not available: not shown
    for _ in range(20):  # each part has a budget of its own; on a loaded machine a first answer may miss it
        overview = (await admin.get(f"/v1/customers/{customer}/overview")).json()
        if overview["rewards"] is not None:
            break
        await asyncio.sleep(0.5)
    assert [(r["name"], r["points_needed"]) for r in overview["rewards"]] == [("r40", 40), ("r100", 100), ("r500", 500)]


@pytest.mark.own_platform(services=["points"])
async def test_the_overviews_internal_read_answers_what_the_public_routes_answer(points: httpx.AsyncClient) -> None:
    """`GET /internal/customers/{id}/overview-parts` (the gateway's read model) is the balance and the closest
    rewards the customer may redeem but cannot afford, exactly as the public routes give them; bad input is a
    problem and nothing else."""
    customer = new_id()
    await earn(points, customer, 120)
    for cost in (100, 150, 400, 900, 2000):
        await create_reward(points, name=f"cost {cost}", cost_points=cost)
    internal = await points.get(f"/internal/customers/{customer}/overview-parts", params={"closest": 3})
    assert internal.status_code == 200, internal.text
    balance = (await points.get(f"/v1/customers/{customer}/points")).json()
    closest = await points.get(
        f"/v1/customers/{customer}/rewards", params={"available": "true", "affordable": "false", "limit": 3}
    )
    assert internal.json() == {"points": balance, "rewards": closest.json()}
    assert [r["cost_points"] for r in internal.json()["rewards"]["items"]] == [150, 400, 900]
    for bad in ({"closest": 0}, {"closest": 51}, {"closest": "x"}):
        refused = await points.get(f"/internal/customers/{customer}/overview-parts", params=bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
    assert (await points.get("/internal/customers/bad%20id/overview-parts")).status_code == 422
