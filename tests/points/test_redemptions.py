"""Redemptions: never below zero under any concurrency, idempotent by reference, and the input limits."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import Platform
from tests.points.conftest import audit_clean, balance, earn, ledger, new_id


async def redeem(client: httpx.AsyncClient, customer: str, n: int, reference: str) -> httpx.Response:
    return await client.post(f"/v1/customers/{customer}/points/redemptions", json={"points": n, "reference": reference})


@pytest.mark.real_commits
class TestConcurrentRedemptions:
    async def test_200_concurrent_redemptions_of_10_against_1000(self, platform: Platform) -> None:
        customer = new_id()
        async with httpx.AsyncClient(
            base_url=platform.urls["points"],
            headers={"X-Internal-Token": platform.env["LOYALTY_INTERNAL_TOKEN"]},
            limits=httpx.Limits(max_connections=200),
            timeout=60,
        ) as client:
            await earn(client, customer, 1000)
            responses = await asyncio.gather(*(redeem(client, customer, 10, f"r-{i}") for i in range(200)))
            statuses = [r.status_code for r in responses]
            assert statuses.count(201) == 100
            assert statuses.count(409) == 100
            assert all(r.json()["code"] == "insufficient_points" for r in responses if r.status_code == 409)
            assert (await balance(client, customer))["balance"] == 0
            entries = await ledger(client, customer)
            assert sum(e["points"] for e in entries) == 0
            assert len([e for e in entries if e["type"] == "redeem"]) == 100
            assert min(e["balance_after"] for e in entries) == 0
            await audit_clean(client)

    async def test_concurrent_repeats_of_one_reference_redeem_once(self, platform: Platform) -> None:
        customer = new_id()
        async with platform.service_client("points") as client:
            await earn(client, customer, 100)
            responses = await asyncio.gather(*(redeem(client, customer, 30, "same") for _ in range(20)))
            assert {r.status_code for r in responses} == {201}
            assert len({r.json()["transaction_id"] for r in responses}) == 1
            assert (await balance(client, customer))["balance"] == 70


class TestIdempotentReference:
    async def test_repeat_answers_with_the_first_transaction(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        await earn(points, customer, 50)
        first = await redeem(points, customer, 20, "order-1")
        assert first.status_code == 201
        assert first.json()["balance"] == 30
        await earn(points, customer, 5)
        again = await redeem(points, customer, 20, "order-1")
        assert again.status_code == 201
        assert again.json() == first.json()
        assert (await balance(points, customer))["balance"] == 35

    async def test_repeat_of_a_redemption_is_not_refused_when_the_balance_is_now_low(
        self, points: httpx.AsyncClient
    ) -> None:
        customer = new_id()
        await earn(points, customer, 20)
        first = await redeem(points, customer, 20, "all-of-it")
        again = await redeem(points, customer, 20, "all-of-it")
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json()["transaction_id"] == first.json()["transaction_id"]

    async def test_earn_reference_repeats_once(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        first = await earn(points, customer, 40, reference="grant-7")
        again = await earn(points, customer, 40, reference="grant-7")
        assert again.json() == first.json()
        assert (await balance(points, customer))["balance"] == 40

    async def test_the_same_reference_in_another_type_is_another_transaction(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        await earn(points, customer, 40, reference="x-1")
        assert (await redeem(points, customer, 10, "x-1")).status_code == 201
        assert (await balance(points, customer))["balance"] == 30

    async def test_idempotency_key_replays(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        await earn(points, customer, 40)
        body = {"points": 10, "reference": "k-1"}
        path = f"/v1/customers/{customer}/points/redemptions"
        first = await points.post(path, json=body, headers={"Idempotency-Key": "key-1"})
        again = await points.post(path, json=body, headers={"Idempotency-Key": "key-1"})
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json() == first.json()
        reused = await points.post(path, json={**body, "points": 11}, headers={"Idempotency-Key": "key-1"})
        assert reused.status_code == 422
        assert reused.json()["code"] == "idempotency_key_reused"


class TestInsufficient:
    async def test_unknown_customer_has_nothing_to_redeem(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        response = await redeem(points, customer, 1, "r")
        assert response.status_code == 409
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "insufficient_points"
        assert (await balance(points, customer)) == {
            "customer_id": customer,
            "balance": 0,
            "tier": "bronze",
            "qualifying_points": 0,
            "next_tier": {"name": "silver", "points_needed": 1000},
            "expiring": [],
        }


class TestInputLimits:
    async def test_bad_points_unknown_fields_and_bad_ids_are_422_and_change_nothing(
        self, points: httpx.AsyncClient
    ) -> None:
        customer = new_id()
        await earn(points, customer, 10)
        path = f"/v1/customers/{customer}/points"
        bad_bodies = [
            {"points": 2**53, "reference": "a"},
            {"points": 0, "reference": "a"},
            {"points": -5, "reference": "a"},
            {"points": "5", "reference": "a"},
            {"points": 1.5, "reference": "a"},
            {"points": 5, "reference": "a", "unexpected": True},
            {"points": 5, "reference": "has space"},
            {"points": 5, "reference": "x" * 65},
            {"points": 5, "reference": "a", "description": "d" * 501},
            {"points": 5},
        ]
        for body in bad_bodies:
            for action in ("earn", "redemptions"):
                response = await points.post(f"{path}/{action}", json=body)
                assert response.status_code == 422, (action, body, response.text)
                assert response.json()["code"] == "validation_error"
        for bad_customer in ("has%20space", "x" * 65, "semi;colon"):
            response = await points.post(
                f"/v1/customers/{bad_customer}/points/earn", json={"points": 5, "reference": "a"}
            )
            assert response.status_code == 422, (bad_customer, response.text)
            assert (await points.get(f"/v1/customers/{bad_customer}/points")).status_code == 422
        # the largest balance there is (2^53 - 1: exact in a JSON double)
        assert (await points.post(f"{path}/earn", json={"points": 2**53 - 11, "reference": "big"})).status_code == 201
        assert (await balance(points, customer))["balance"] == 2**53 - 1

    async def test_bad_cursor_is_422(self, points: httpx.AsyncClient) -> None:
        response = await points.get(f"/v1/customers/{new_id()}/points/transactions", params={"cursor": "nope"})
        assert response.status_code == 422


class TestLedgerPages:
    async def test_transactions_are_paginated_newest_first(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        for i in range(5):
            await earn(points, customer, i + 1, reference=f"e{i}")
        page = (await points.get(f"/v1/customers/{customer}/points/transactions", params={"limit": 2})).json()
        assert [t["reference"] for t in page["items"]] == ["e4", "e3"]
        assert page["items"][0]["balance_after"] == 15
        entries = await ledger(points, customer)
        assert [e["reference"] for e in entries] == ["e0", "e1", "e2", "e3", "e4"]
        assert [e["balance_after"] for e in entries] == [1, 3, 6, 10, 15]


class TestAdjustments:
    async def test_signed_adjustments_may_go_negative_and_repeat_once(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        path = f"/v1/customers/{customer}/points/adjustments"
        up = await points.post(path, json={"points": 30, "reference": "fix-1", "description": "goodwill"})
        assert up.status_code == 201, up.text
        assert (up.json()["points"], up.json()["balance"]) == (30, 30)
        down = await points.post(path, json={"points": -50, "reference": "fix-2"})
        assert (down.json()["points"], down.json()["balance"]) == (-50, -20)
        again = await points.post(path, json={"points": -50, "reference": "fix-2"})
        assert again.json() == down.json()
        assert (await points.post(path, json={"points": 0, "reference": "fix-3"})).status_code == 422
        await earn(points, customer, 10)
        assert (await balance(points, customer))["balance"] == -10
        assert [e["type"] for e in await ledger(points, customer)] == ["adjust", "adjust", "earn"]
        await audit_clean(points)
