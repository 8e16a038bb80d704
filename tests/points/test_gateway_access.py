"""Through the gateway: who may read, earn and redeem."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from tests.conftest import Platform
from tests.points.conftest import new_id


async def customer_token(admin: httpx.AsyncClient, customer: str) -> str:
    response = await admin.post("/v1/customer-tokens", json={"customer_id": customer, "ttl_seconds": 600})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def test_customer_reads_and_redeems_only_their_own_points(platform: Platform, admin: httpx.AsyncClient) -> None:
    me, other = new_id(), new_id()
    for customer in (me, other):
        earned = await admin.post(f"/v1/customers/{customer}/points/earn", json={"points": 50, "reference": "w"})
        assert earned.status_code == 201, earned.text
    async with platform.client(await customer_token(admin, me)) as client:
        assert (await client.get(f"/v1/customers/{me}/points")).json()["balance"] == 50
        assert (await client.get("/v1/me/points")).json()["customer_id"] == me
        assert (await client.get(f"/v1/customers/{me}/points/transactions")).status_code == 200
        spent = await client.post("/v1/me/points/redemptions", json={"points": 20, "reference": "coffee"})
        assert spent.status_code == 201, spent.text
        assert spent.json()["balance"] == 30
        assert (await client.get(f"/v1/customers/{other}/points")).status_code == 404
        stolen = await client.post(f"/v1/customers/{other}/points/redemptions", json={"points": 20, "reference": "x"})
        assert stolen.status_code == 404
        minted = await client.post(f"/v1/customers/{me}/points/earn", json={"points": 1000, "reference": "free"})
        assert minted.status_code == 403
        assert (await client.put("/v1/points/tiers", json=[])).status_code == 403
    assert (await admin.get(f"/v1/customers/{other}/points")).json()["balance"] == 50
    assert (await admin.get(f"/v1/customers/{me}/points")).json()["balance"] == 30


async def test_partner_needs_points_write_to_redeem(platform: Platform, admin: httpx.AsyncClient) -> None:
    customer = new_id()
    await admin.post(f"/v1/customers/{customer}/points/earn", json={"points": 50, "reference": "w"})
    key = await admin.post("/v1/api-keys", json={"name": new_id("k"), "scopes": ["points:read"]})
    async with platform.client(key.json()["key"]) as reader:
        assert (await reader.get(f"/v1/customers/{customer}/points")).status_code == 200
        refused = await reader.post(
            f"/v1/customers/{customer}/points/redemptions", json={"points": 1, "reference": "r"}
        )
        assert refused.status_code == 403
    assert (await admin.get(f"/v1/customers/{customer}/points")).json()["balance"] == 50


async def test_customer_token_straight_to_the_service_is_held_to_its_own_account(platform: Platform) -> None:
    """The service does not rely on the gateway alone for the caller's identity rules."""
    me, other = new_id(), new_id()
    async with platform.service_client("points", **{"X-Caller-Kind": "customer", "X-Caller-Id": me}) as client:
        assert (await client.get(f"/v1/customers/{other}/points")).status_code == 404
        assert (
            await client.post(f"/v1/customers/{me}/points/earn", json={"points": 5, "reference": "r"})
        ).status_code == 403


async def _wait_for_balance(admin: httpx.AsyncClient, customer: str, expected: int) -> int:
    """Purchases reach the points service through the gateway's outbox: wait for the delivery."""
    balance = None
    for _ in range(100):
        balance = (await admin.get(f"/v1/customers/{customer}/points")).json()["balance"]
        if balance == expected:
            return int(balance)
        await asyncio.sleep(0.1)
    return int(balance or 0)


async def test_a_purchase_and_its_refund_through_the_gateway(admin: httpx.AsyncClient) -> None:
    customer, purchase_id = new_id(), new_id("p")
    purchase = {
        "purchase_id": purchase_id,
        "customer_id": customer,
        "occurred_at": datetime.now(UTC).isoformat(),
        "currency": "EUR",
        "total": "25.00",
        "items": [{"product_id": "sku-1", "name": "Tea", "category": "food", "unit_price": "12.50", "quantity": 2}],
    }
    accepted = await admin.post("/v1/purchases", json=purchase)
    assert accepted.status_code == 202, accepted.text
    assert await _wait_for_balance(admin, customer, 25) == 25
    refunded = await admin.post(f"/v1/purchases/{purchase_id}/refunds", json={"refund_id": "rf-1", "amount": "10.00"})
    assert refunded.status_code == 202, refunded.text
    assert await _wait_for_balance(admin, customer, 15) == 15
    entries = (await admin.get(f"/v1/customers/{customer}/points/transactions")).json()["items"]
    assert [(e["type"], e["points"], e["reference"]) for e in entries] == [
        ("reverse", -10, "rf-1"),
        ("earn", 25, purchase_id),
    ]
