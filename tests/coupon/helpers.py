"""Small factories for the coupon tests (straight to the service, internal token)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx


def uid(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


async def create_campaign(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": uid("campaign-"),
        "discount": {"type": "percent", "value": "10", "currency": "EUR"},
        "code": {"length": 14, "charset": "unambiguous"},
    }
    body.update(overrides)
    response = await client.post("/v1/coupon-campaigns", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def generate(client: httpx.AsyncClient, campaign_id: str, count: int) -> list[str]:
    response = await client.post(f"/v1/coupon-campaigns/{campaign_id}/codes", json={"count": count})
    assert response.status_code == 201, response.text
    codes: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(f"/v1/coupon-campaigns/{campaign_id}/codes", params=params)).json()
        codes += [item["code"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return codes


async def issue(client: httpx.AsyncClient, campaign_id: str, customer_id: str) -> str:
    response = await client.post(f"/v1/coupon-campaigns/{campaign_id}/issuances", json={"customer_id": customer_id})
    assert response.status_code == 201, response.text
    return response.json()["code"]  # type: ignore[no-any-return]


def order(customer_id: str, total: str = "100.00", currency: str = "EUR", **extra: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "order_id": uid("order-"), "order_total": total, "currency": currency, **extra}


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
