"""Earning through the rules (rounding, categories, campaigns, tiers) and the event handlers: each event
is posted straight to the service's /internal/events, twice, and must have one effect."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest

from tests.points.conftest import DEFAULT_RULES, audit_clean, balance, ledger, new_id


def event(type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    # as the relay sends it: the business time is the purchase's own, when the payload names one
    now = datetime.now(UTC).isoformat()
    return {"id": str(uuid4()), "type": type_, "occurred_at": payload.get("occurred_at", now), "published_at": now,
            "payload": payload}  # fmt: skip


async def deliver(client: httpx.AsyncClient, body: dict[str, Any], times: int = 2) -> None:
    for _ in range(times):
        response = await client.post("/internal/events", json=body)
        assert response.status_code == 200, response.text


def purchase(customer: str, total: str, items: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "purchase_id": extra.pop("purchase_id", new_id("p")),
        "customer_id": customer,
        "email": None,
        "occurred_at": extra.pop("occurred_at", datetime.now(UTC).isoformat()),
        "currency": "EUR",
        "total": total,
        "items": items
        if items is not None
        else [{"product_id": "x", "name": "x", "category": "misc", "unit_price": total, "quantity": 1}],
        **extra,
    }


def item(category: str, unit_price: str, quantity: int = 1) -> dict[str, Any]:
    return {"product_id": new_id("sku"), "name": "thing", "category": category, "unit_price": unit_price,
            "quantity": quantity}  # fmt: skip


class TestEarningRules:
    async def test_rounds_down_once_per_purchase(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        body = purchase(customer, "10.50", [item("a", "3.50"), item("b", "3.50"), item("c", "3.50")])
        await deliver(points, event("purchase.created", body))
        entries = await ledger(points, customer)
        # 10.50 rounded down once is 10 (line by line it would be 3 x 3 = 9)
        assert [(e["type"], e["points"], e["reference"]) for e in entries] == [("earn", 10, body["purchase_id"])]
        assert entries[0]["description"] == f"Purchase {body['purchase_id']}"

    @pytest.mark.own_platform(services=["points"])
    async def test_categories_campaigns_and_bonus(self, points: httpx.AsyncClient) -> None:
        now = datetime.now(UTC)
        rules = {
            "points_per_currency_unit": 1,
            "category_multipliers": {"food": 1.5},
            "bonus_campaigns": [
                {"name": "books x2", "multiplier": 2, "categories": ["books"],
                 "starts_at": (now - timedelta(days=1)).isoformat(), "ends_at": (now + timedelta(days=1)).isoformat()},
                {"name": "toys +50", "bonus_points": 50, "categories": ["toys"],
                 "starts_at": (now - timedelta(days=1)).isoformat(), "ends_at": (now + timedelta(days=1)).isoformat()},
                {"name": "ended x10", "multiplier": 10,
                 "starts_at": (now - timedelta(days=9)).isoformat(), "ends_at": (now - timedelta(days=2)).isoformat()},
                {"name": "not matched +7", "bonus_points": 7, "categories": ["garden"],
                 "starts_at": (now - timedelta(days=1)).isoformat(), "ends_at": (now + timedelta(days=1)).isoformat()},
            ],
            "expires_after_days": 365,
        }  # fmt: skip
        response = await points.put("/v1/points/rules", json=rules)
        assert response.status_code == 200, response.text
        assert (await points.get("/v1/points/rules")).json()["category_multipliers"] == {"food": 1.5}
        customer = new_id()
        body = purchase(customer, "18.33", [item("books", "10.00"), item("toys", "5.00"), item("food", "3.33")])
        await deliver(points, event("purchase.created", body))
        # books 10 x 2 + toys 5 + food 3.33 x 1.5 = 29.995, rounded down to 29, + 50 bonus
        assert (await balance(points, customer))["balance"] == 79

    @pytest.mark.own_platform(services=["points"])
    async def test_campaign_is_judged_at_the_purchase_time(self, points: httpx.AsyncClient) -> None:
        now = datetime.now(UTC)
        campaign = {"name": "june", "multiplier": 3, "starts_at": (now - timedelta(days=30)).isoformat(),
                    "ends_at": (now - timedelta(days=20)).isoformat()}  # fmt: skip
        await points.put("/v1/points/rules", json={**DEFAULT_RULES, "bonus_campaigns": [campaign]})
        customer = new_id()
        inside = purchase(customer, "10.00", occurred_at=(now - timedelta(days=25)).isoformat())
        outside = purchase(customer, "10.00")
        await deliver(points, event("purchase.created", inside))
        await deliver(points, event("purchase.created", outside))
        assert [e["points"] for e in await ledger(points, customer)] == [30, 10]

    async def test_discounted_lines_earn_on_what_was_paid(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        await deliver(points, event("purchase.created", purchase(customer, "50.00", [item("a", "100.00")])))
        assert (await balance(points, customer))["balance"] == 50

    @pytest.mark.own_platform(services=["points"])
    async def test_points_per_currency_unit(self, points: httpx.AsyncClient) -> None:
        await points.put("/v1/points/rules", json={**DEFAULT_RULES, "points_per_currency_unit": 0.5})
        customer = new_id()
        await deliver(points, event("purchase.created", purchase(customer, "25.00")))
        assert (await balance(points, customer))["balance"] == 12

    @pytest.mark.parametrize(
        "rules",
        [
            {**DEFAULT_RULES, "surprise": 1},
            {**DEFAULT_RULES, "points_per_currency_unit": -1},
            {**DEFAULT_RULES, "expires_after_days": 0},
            {**DEFAULT_RULES, "bonus_campaigns": [{"name": "both", "multiplier": 2, "bonus_points": 5,
                                                    "starts_at": "2026-01-01T00:00:00Z",
                                                    "ends_at": "2026-02-01T00:00:00Z"}]},
            {**DEFAULT_RULES, "bonus_campaigns": [{"name": "backwards", "multiplier": 2,
                                                    "starts_at": "2026-02-01T00:00:00Z",
                                                    "ends_at": "2026-01-01T00:00:00Z"}]},
            {**DEFAULT_RULES, "bonus_campaigns": [{"name": "naive", "multiplier": 2,
                                                    "starts_at": "2026-01-01T00:00:00",
                                                    "ends_at": "2026-02-01T00:00:00"}]},
        ],
    )  # fmt: skip
    async def test_bad_rules_are_422(self, points: httpx.AsyncClient, rules: dict[str, Any]) -> None:
        response = await points.put("/v1/points/rules", json=rules)
        assert response.status_code == 422, response.text
        assert (await points.get("/v1/points/rules")).json()["points_per_currency_unit"] == 1


@pytest.mark.own_platform(services=["points"])
class TestTiers:
    async def test_tier_changes_with_qualifying_points_and_multiplies_earning(self, points: httpx.AsyncClient) -> None:
        tiers = [{"name": "base", "threshold": 0, "earn_multiplier": 1},
                 {"name": "plus", "threshold": 100, "earn_multiplier": 2}]  # fmt: skip
        assert (await points.put("/v1/points/tiers", json=tiers)).status_code == 200
        customer = new_id()
        await deliver(points, event("purchase.created", purchase(customer, "80.00")))
        view = await balance(points, customer)
        assert (view["tier"], view["qualifying_points"], view["next_tier"]) == (
            "base",
            80,
            {"name": "plus", "points_needed": 20},
        )
        await deliver(points, event("purchase.created", purchase(customer, "50.00")))
        view = await balance(points, customer)
        assert (view["tier"], view["qualifying_points"], view["next_tier"]) == ("plus", 130, None)
        await deliver(points, event("purchase.created", purchase(customer, "10.00")))
        assert [e["points"] for e in await ledger(points, customer)] == [80, 50, 20]

    async def test_qualifying_points_are_the_trailing_365_days(
        self, points: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        tiers = [{"name": "base", "threshold": 0, "earn_multiplier": 1},
                 {"name": "plus", "threshold": 100, "earn_multiplier": 2}]  # fmt: skip
        await points.put("/v1/points/tiers", json=tiers)
        customer = new_id()
        await points.post(f"/v1/customers/{customer}/points/earn", json={"points": 150, "reference": "old"})
        await points.post(f"/v1/customers/{customer}/points/redemptions", json={"points": 100, "reference": "r"})
        assert (await balance(points, customer))["tier"] == "plus"  # spending does not lower the tier
        # time travel: the earn happened 366 days ago (the ledger's append-only trigger is bypassed for this)
        async with db.transaction():
            await db.execute("SET LOCAL session_replication_role = replica")
            await db.execute(
                "UPDATE transactions SET created_at = now() - interval '366 days' "
                "WHERE customer_id = $1 AND reference = 'old'",
                customer,
            )
        view = await balance(points, customer)
        assert (view["tier"], view["qualifying_points"], view["balance"]) == ("base", 0, 50)

    async def test_no_tier_below_the_lowest_threshold_and_bad_tiers(self, points: httpx.AsyncClient) -> None:
        tiers = [{"name": "vip", "threshold": 10, "earn_multiplier": 3}]
        assert (await points.put("/v1/points/tiers", json=tiers)).json() == tiers
        view = await balance(points, new_id())
        assert (view["tier"], view["next_tier"]) == (None, {"name": "vip", "points_needed": 10})
        duplicate = [{"name": "a", "threshold": 0}, {"name": "a", "threshold": 5}]
        assert (await points.put("/v1/points/tiers", json=duplicate)).status_code == 422
        negative = [{"name": "a", "threshold": -1}]
        assert (await points.put("/v1/points/tiers", json=negative)).status_code == 422


class TestReversals:
    async def test_reversal_into_negative_and_repayment(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        body = purchase(customer, "100.00")
        pid = body["purchase_id"]
        await deliver(points, event("purchase.created", body))
        await points.post(f"/v1/customers/{customer}/points/redemptions", json={"points": 80, "reference": "spend"})
        refund = {"purchase_id": pid, "refund_id": "rf-1", "customer_id": customer, "amount": "30.00",
                  "total": "100.00", "currency": "EUR"}  # fmt: skip
        await deliver(points, event("purchase.refunded", refund))
        await deliver(points, event("purchase.refunded", refund), times=1)  # another event, same refund id
        assert (await balance(points, customer))["balance"] == -10
        # the next earning repays the debt first: only 15 of 25 form a lot
        await points.post(f"/v1/customers/{customer}/points/earn", json={"points": 25, "reference": "bonus"})
        view = await balance(points, customer)
        assert view["balance"] == 15
        assert [e["points"] for e in view["expiring"]] == [15]
        full = {**refund, "refund_id": "rf-2", "amount": None}
        await deliver(points, event("purchase.refunded", full))
        entries = await ledger(points, customer)
        assert [(e["type"], e["points"], e["balance_after"]) for e in entries] == [
            ("earn", 100, 100),
            ("redeem", -80, 20),
            ("reverse", -30, -10),
            ("earn", 25, 15),
            ("reverse", -70, -55),
        ]
        assert (await balance(points, customer))["expiring"] == []
        # a redemption never goes below zero, even from a negative balance
        spend = await points.post(f"/v1/customers/{customer}/points/redemptions", json={"points": 1, "reference": "x"})
        assert spend.status_code == 409
        await audit_clean(points)

    @pytest.mark.own_platform(services=["points"])
    async def test_pro_rata_shares_add_up_to_what_was_earned(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        body = purchase(customer, "3.00", [item("a", "1.00", 3)])
        await points.put("/v1/points/rules", json={**DEFAULT_RULES, "points_per_currency_unit": "3.333"})
        await deliver(points, event("purchase.created", body))  # 9.999 -> 9
        reversals = []
        for n in range(3):
            response = await points.post(
                f"/v1/customers/{customer}/points/reversals",
                json={"purchase_reference": body["purchase_id"], "refund_reference": f"r{n}", "amount": "1.00"},
            )
            assert response.status_code == 201, response.text
            reversals.append(response.json()["points"])
        assert reversals == [3, 3, 3]
        assert (await balance(points, customer))["balance"] == 0
        over = await points.post(
            f"/v1/customers/{customer}/points/reversals",
            json={"purchase_reference": body["purchase_id"], "refund_reference": "r-over", "amount": "1.00"},
        )
        assert over.status_code == 201
        assert over.json()["points"] == 0
        assert over.json()["transaction_id"] is None

    @pytest.mark.own_platform(services=["points"])
    async def test_rounding_of_a_partial_refund_favours_the_customer(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        body = purchase(customer, "3.00")
        await points.put("/v1/points/rules", json={**DEFAULT_RULES, "points_per_currency_unit": "3.3334"})
        await deliver(points, event("purchase.created", body))  # 10.0002 -> 10
        path = f"/v1/customers/{customer}/points/reversals"
        first = await points.post(
            path, json={"purchase_reference": body["purchase_id"], "refund_reference": "a", "amount": "1.00"}
        )
        assert first.json()["points"] == 3  # 10 x 1/3 = 3.33, rounded down
        repeat = await points.post(
            path, json={"purchase_reference": body["purchase_id"], "refund_reference": "a", "amount": "1.00"}
        )
        assert repeat.json() == first.json()
        rest = await points.post(path, json={"purchase_reference": body["purchase_id"], "refund_reference": "b"})
        assert rest.json()["points"] == 7
        assert (await balance(points, customer))["balance"] == 0

    async def test_reversal_of_an_unknown_purchase_is_404_and_bad_amount_422(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        path = f"/v1/customers/{customer}/points/reversals"
        missing = await points.post(path, json={"purchase_reference": "nope", "refund_reference": "r"})
        assert missing.status_code == 404
        body = purchase(customer, "10.00")
        await deliver(points, event("purchase.created", body))
        bad = await points.post(
            path, json={"purchase_reference": body["purchase_id"], "refund_reference": "r", "amount": "1.001"}
        )
        assert bad.status_code == 422
        assert (await balance(points, customer))["balance"] == 10

    async def test_refund_before_its_purchase_is_retried(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        refund = {"purchase_id": "later", "refund_id": "rf", "customer_id": customer, "amount": None,
                  "total": "5.00", "currency": "EUR"}  # fmt: skip
        response = await points.post("/internal/events", json=event("purchase.refunded", refund))
        assert response.status_code == 409  # the relay retries 409s with backoff
        assert (await balance(points, customer))["balance"] == 0


class TestEventHandlers:
    async def test_purchase_created_twice_earns_once(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        body = purchase(customer, "42.00")
        await deliver(points, event("purchase.created", body))
        await deliver(points, event("purchase.created", body))  # a second event for the same purchase
        assert (await balance(points, customer))["balance"] == 42

    @pytest.mark.real_commits
    async def test_concurrent_deliveries_of_one_event_earn_once(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        body = event("purchase.created", purchase(customer, "12.00"))
        responses = await asyncio.gather(*(points.post("/internal/events", json=body) for _ in range(5)))
        assert all(r.status_code in (200, 409) for r in responses)
        assert (await balance(points, customer))["balance"] == 12

    async def test_survey_reward(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        invitation = str(uuid4())
        payload = {"response_id": str(uuid4()), "invitation_id": invitation, "survey_id": str(uuid4()),
                   "customer_id": customer, "reward_points": 25}  # fmt: skip
        await deliver(points, event("survey.responded", payload))
        await deliver(points, event("survey.responded", payload))
        entries = await ledger(points, customer)
        assert [(e["type"], e["points"], e["reference"]) for e in entries] == [("earn", 25, f"survey:{invitation}")]
        # a reward of nothing breaks the contract: refused (the relay parks it), nothing credited
        nothing = {**payload, "invitation_id": str(uuid4()), "reward_points": 0}
        refused = await points.post("/internal/events", json=event("survey.responded", nothing))
        assert (refused.status_code, refused.json()["code"]) == (422, "malformed_event")
        assert (await balance(points, customer))["balance"] == 25

    async def test_unreadable_payload_is_refused(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        # a total, but no time and no currency: refused (the relay parks it, never retries it) and earns nothing
        unreadable = event("purchase.created", {"purchase_id": new_id("p"), "customer_id": customer, "total": "30.00"})
        for _ in range(2):  # refused each time, never recorded as handled
            refused = await points.post("/internal/events", json=unreadable)
            assert (refused.status_code, refused.json()["code"]) == (422, "malformed_event")
        assert await ledger(points, customer) == []
        assert (await balance(points, customer))["balance"] == 0
