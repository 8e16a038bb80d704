"""Small factories and waits for the loop tests."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx


def purchase_body(
    customer_id: str | None = None,
    *,
    total: str = "40.00",
    email: str | None = None,
    purchase_id: str | None = None,
    category: str = "Kitchen",
) -> dict[str, Any]:
    return {
        "purchase_id": purchase_id or f"p-{uuid4().hex[:12]}",
        "customer_id": customer_id or f"c-{uuid4().hex[:10]}",
        "email": email,
        "occurred_at": datetime.now(UTC).isoformat(),
        "currency": "GBP",
        "total": total,
        "items": [
            {
                "product_id": "22423",
                "name": "Regency cakestand 3 tier",
                "category": category,
                "unit_price": total,
                "quantity": 1,
            },
        ],
    }


async def wait_for_deliveries(
    client: httpx.AsyncClient,
    purchase_id: str,
    *,
    timeout: float = 30.0,
    states: frozenset[str] = frozenset({"delivered"}),
) -> dict[str, str]:
    """Until every delivery of the purchase is in one of `states`."""
    deadline = time.monotonic() + timeout
    deliveries: dict[str, str] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/purchases/{purchase_id}")
        deliveries = response.json()["deliveries"]
        if deliveries and all(state in states for state in deliveries.values()):
            return deliveries
        await asyncio.sleep(0.1)
    raise TimeoutError(f"deliveries of {purchase_id} still {deliveries} after {timeout} s")
