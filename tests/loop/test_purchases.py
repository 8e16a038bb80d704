"""POST /v1/purchases: stored with its deliveries in one transaction, idempotent by purchase_id, fanned out to
every service at least once; refunds reverse the points (pro rata)."""

import asyncio
from decimal import Decimal

import httpx
import pytest

from tests.conftest import Platform
from tests.loop.helpers import purchase_body, wait_for_deliveries


class TestAcceptance:
    async def test_purchase_is_accepted_and_delivered_to_every_service(self, admin: httpx.AsyncClient) -> None:
        body = purchase_body()
        response = await admin.post("/v1/purchases", json=body)
        assert response.status_code == 202, response.text
        assert response.json() == {"purchase_id": body["purchase_id"], "status": "accepted"}
        deliveries = await wait_for_deliveries(admin, body["purchase_id"])
        assert deliveries == {name: "delivered" for name in ("points", "coupon", "recommend", "survey")}

    async def test_same_body_same_answer_another_body_409(self, admin: httpx.AsyncClient) -> None:
        body = purchase_body()
        first = await admin.post("/v1/purchases", json=body)
        again = await admin.post("/v1/purchases", json=body)
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json()
        changed = {**body, "total": "41.00"}
        conflict = await admin.post("/v1/purchases", json=changed)
        assert conflict.status_code == 409
        assert conflict.json()["code"] == "purchase_conflict"

    async def test_bad_purchases_are_refused_and_store_nothing(self, admin: httpx.AsyncClient) -> None:
        body = purchase_body()
        for bad in (
            {**body, "total": "-1.00"},
            {**body, "total": "1.001"},
            {**body, "currency": "pounds"},
            {**body, "items": []},
            {**body, "occurred_at": "yesterday"},
            {**body, "customer_id": "not valid!"},
            {**body, "surprise": True},
        ):
            response = await admin.post("/v1/purchases", json=bad)
            assert response.status_code == 422, (bad, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        assert (await admin.get(f"/v1/purchases/{body['purchase_id']}")).status_code == 404

    @pytest.mark.real_commits
    async def test_twenty_concurrent_sends_make_one_purchase_and_one_earn(self, platform: Platform) -> None:
        body = purchase_body(total="25.00")
        async with platform.client(limits=httpx.Limits(max_connections=40)) as client:
            responses = await asyncio.gather(*(client.post("/v1/purchases", json=body) for _ in range(20)))
            assert {r.status_code for r in responses} == {202}
            await wait_for_deliveries(client, body["purchase_id"])
            points = (await client.get(f"/v1/customers/{body['customer_id']}/points")).json()
            transactions = (await client.get(f"/v1/customers/{body['customer_id']}/points/transactions")).json()
        earns = [t for t in transactions["items"] if t["type"] == "earn"]
        assert len(earns) == 1
        assert points["balance"] == earns[0]["points"] > 0


class TestRefunds:
    async def test_full_refund_reverses_the_points(self, admin: httpx.AsyncClient) -> None:
        body = purchase_body(total="30.00")
        await admin.post("/v1/purchases", json=body)
        await wait_for_deliveries(admin, body["purchase_id"])
        customer = body["customer_id"]
        earned = (await admin.get(f"/v1/customers/{customer}/points")).json()["balance"]
        assert earned > 0

        refund = await admin.post(f"/v1/purchases/{body['purchase_id']}/refunds", json={"refund_id": f"r-{customer}"})
        assert refund.status_code == 202, refund.text
        assert Decimal(refund.json()["amount"]) == Decimal("30.00")
        await _wait_balance(admin, customer, 0)

    async def test_partial_refund_is_pro_rata_and_never_exceeds_the_total(self, admin: httpx.AsyncClient) -> None:
        body = purchase_body(total="100.00")
        await admin.post("/v1/purchases", json=body)
        await wait_for_deliveries(admin, body["purchase_id"])
        customer = body["customer_id"]
        earned = (await admin.get(f"/v1/customers/{customer}/points")).json()["balance"]
        url = f"/v1/purchases/{body['purchase_id']}/refunds"

        assert (await admin.post(url, json={"refund_id": f"a-{customer}", "amount": "25.00"})).status_code == 202
        await _wait_balance(admin, customer, earned - earned // 4)
        # the same refund again changes nothing; another body under its id is a conflict
        assert (await admin.post(url, json={"refund_id": f"a-{customer}", "amount": "25.00"})).status_code == 202
        reused = await admin.post(url, json={"refund_id": f"a-{customer}", "amount": "30.00"})
        assert reused.status_code == 409 and reused.json()["code"] == "refund_conflict"
        too_much = await admin.post(url, json={"refund_id": f"b-{customer}", "amount": "75.01"})
        assert too_much.status_code == 422 and too_much.json()["code"] == "refund_exceeds_total"

        purchase = (await admin.get(f"/v1/purchases/{body['purchase_id']}")).json()
        assert [r["refund_id"] for r in purchase["refunds"]] == [f"a-{customer}"]

    async def test_refund_of_an_unknown_purchase_is_404(self, admin: httpx.AsyncClient) -> None:
        response = await admin.post("/v1/purchases/never-made/refunds", json={"refund_id": "r1"})
        assert response.status_code == 404


async def _wait_balance(client: httpx.AsyncClient, customer: str, expected: int, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    balance = None
    while asyncio.get_running_loop().time() < deadline:
        balance = (await client.get(f"/v1/customers/{customer}/points")).json()["balance"]
        if balance == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"balance of {customer} is {balance}, expected {expected}")
