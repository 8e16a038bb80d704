"""Fixtures of the points tests: a client straight to the service, a database connection for the few checks
that must look under the API (the test travels in time by back-dating lots), and helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest

from tests.conftest import Platform


def new_id(prefix: str = "c") -> str:
    return f"{prefix}-{uuid4().hex}"


@pytest.fixture
async def points(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with platform.service_client("points") as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "points"})
    yield connection
    await connection.close()


# The rules and tiers a new programme starts with (the migrations' defaults), as a base for a test's own.
DEFAULT_RULES: dict[str, Any] = {
    "points_per_currency_unit": 1,
    "category_multipliers": {},
    "bonus_campaigns": [],
    "expires_after_days": 365,
}
DEFAULT_TIERS: list[dict[str, Any]] = [
    {"name": "bronze", "threshold": 0, "earn_multiplier": 1},
    {"name": "silver", "threshold": 1000, "earn_multiplier": 1.25},
    {"name": "gold", "threshold": 5000, "earn_multiplier": 1.5},
]


async def earn(client: httpx.AsyncClient, customer: str, n: int, reference: str | None = None) -> httpx.Response:
    response = await client.post(
        f"/v1/customers/{customer}/points/earn", json={"points": n, "reference": reference or new_id("e")}
    )
    assert response.status_code == 201, response.text
    return response


async def balance(client: httpx.AsyncClient, customer: str) -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{customer}/points")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def ledger(client: httpx.AsyncClient, customer: str) -> list[dict[str, Any]]:
    """The whole ledger, oldest first, following the cursor."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(f"/v1/customers/{customer}/points/transactions", params=params)).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return list(reversed(items))


async def audit_clean(client: httpx.AsyncClient) -> dict[str, Any]:
    report = (await client.get("/v1/points/audit")).json()
    assert report["mismatches"] == [], report
    return report  # type: ignore[no-any-return]
