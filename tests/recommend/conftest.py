"""The December 2010 Online Retail sample, loaded once for the recommend tests: its catalog (categories from
descriptions, as scripts/online_retail.py derives them) and its purchase history, then one trained model."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from scripts.online_retail import SAMPLE, category_for, rows
from tests.conftest import Platform


@dataclass
class Retail:
    products: dict[str, tuple[str, str]]  # product -> (name, category)
    history: dict[str, Counter[str]]  # customer -> product -> lines
    model_version: int


async def wait_for_model(client: httpx.AsyncClient, version: int) -> dict[str, Any]:
    for _ in range(2400):
        model = (await client.get("/v1/recommend/model")).json()
        if model["version"] >= version and not model["training"]:
            return model  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"model {version} was not trained in 120 s")


async def load_retail(platform: Platform) -> Retail:
    """Loads the sample's catalog and history into `platform`'s recommend service and trains a model on them."""
    products: dict[str, tuple[str, str]] = {}
    history: dict[str, Counter[str]] = {}
    csv = io.StringIO()
    csv.write("customer_id,product_id,quantity,occurred_at\n")
    for row in rows(SAMPLE):
        products.setdefault(row.product_id, (row.description or row.product_id, category_for(row.description)))
        history.setdefault(row.customer_id, Counter())[row.product_id] += 1
        csv.write(f"{row.customer_id},{row.product_id},{row.quantity},{row.occurred_at.isoformat()}\n")
    async with platform.service_client("recommend") as client:
        items = [{"product_id": p, "name": n, "category": c} for p, (n, c) in products.items()]
        put = await client.put("/v1/products", json={"items": items})
        assert put.status_code == 200, put.text
        imported = await client.post(
            "/v1/interactions:import", content=csv.getvalue().encode(), headers={"Content-Type": "text/csv"}
        )
        assert imported.status_code == 200, imported.text
        assert imported.json()["rejected"] == 0
        retrain = await client.post("/v1/recommend/model/retrain")
        assert retrain.status_code == 202, retrain.text
        await wait_for_model(client, retrain.json()["version"])
        return Retail(products, history, retrain.json()["version"])


@pytest.fixture(scope="session")
async def retail(session_platform: Platform) -> Retail:
    return await load_retail(session_platform)
