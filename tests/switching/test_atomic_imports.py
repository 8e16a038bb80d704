"""Each bulk import is one transaction, with or without an Idempotency-Key: a line late in the file that refuses the
whole call (here one longer than the 64 KiB a line may hold) leaves nothing of the earlier lines stored, even where
the service had already written them (the interactions import writes as it reads, 5,000 lines at a time). Lines
that are merely bad are still rejected alone, the others accepted (contract v1.1, "Switching"; docs/recommend.md):
the other tests show that.

Each test then sends the good lines alone: they are all taken, none a duplicate, so the refused call had stored
nothing (and the check would have seen it if it had)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from tests.coupon.helpers import create_campaign
from tests.switching.test_imports import NDJSON, ndjson, points_of

LONG_LINE = orjson.dumps({"customer_id": "x", "padding": "a" * 70_000})


def uid(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def refused_late(admin: httpx.AsyncClient, path: str, good: list[Any]) -> None:
    """The good lines and then, last and unterminated, one too long: 422 naming that line."""
    body = ndjson(good) + LONG_LINE
    response = await admin.post(path, content=body, headers=NDJSON)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["body"]
    assert response.json()["errors"][0]["message"].startswith(f"Line {len(good) + 1} is longer than")


async def test_opening_balances(admin: httpx.AsyncClient) -> None:
    members = [uid() for _ in range(300)]
    good = [{"customer_id": m, "points": 10, "reference": "opening"} for m in members]
    await refused_late(admin, "/v1/points/balances:import", good)
    assert (await points_of(admin, members[0]))["balance"] == 0
    report = (await admin.post("/v1/points/balances:import", content=ndjson(good), headers=NDJSON)).json()
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (300, 0, [])
    assert (await points_of(admin, members[0]))["balance"] == 10


async def test_a_long_line_in_the_middle_is_refused_too(admin: httpx.AsyncClient) -> None:
    """Terminated and followed by good lines, so it may arrive whole in one chunk of the body: still 422."""
    members = [uid() for _ in range(3)]
    good = [{"customer_id": m, "points": 10, "reference": "opening"} for m in members]
    body = ndjson(good[:1]) + LONG_LINE + b"\n" + ndjson(good[1:])
    response = await admin.post("/v1/points/balances:import", content=body, headers=NDJSON)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["message"].startswith("Line 2 is longer than")
    assert (await points_of(admin, members[0]))["balance"] == 0


async def test_existing_codes(admin: httpx.AsyncClient) -> None:
    campaign = await create_campaign(admin)
    path = f"/v1/coupon-campaigns/{campaign['id']}/codes:import"
    good = [{"code": f"OLD-{uuid.uuid4().hex[:16]}"} for _ in range(300)]
    await refused_late(admin, path, good)
    report = (await admin.post(path, content=ndjson(good), headers=NDJSON)).json()
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (300, 0, [])


async def test_opt_outs(admin: httpx.AsyncClient) -> None:
    good = [{"customer_id": uid()} for _ in range(300)]
    await refused_late(admin, "/v1/survey-opt-outs:import", good)
    report = (await admin.post("/v1/survey-opt-outs:import", content=ndjson(good), headers=NDJSON)).json()
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (300, 0, [])


async def test_interactions_written_batch_by_batch(admin: httpx.AsyncClient) -> None:
    product = uid("p")
    catalog = {"product_id": product, "name": "Lamp", "category": "Lighting", "price": "12.00", "currency": "GBP"}
    assert (await admin.put("/v1/products", json={"items": [catalog]})).status_code == 200
    customer = uid()
    # past the import's batch of 5,000 lines: the first batch is written before the long line arrives
    good = [
        {"customer_id": customer, "product_id": product, "occurred_at": f"2011-01-01T00:00:{n % 60:02d}Z"}
        for n in range(6_000)
    ]
    await refused_late(admin, "/v1/interactions:import", good)
    before = (await admin.get(f"/v1/customers/{customer}/recommendations", params={"mode": "buy_again"})).json()
    assert before["strategy"] != "personal", before  # no history of the customer's stored
    imported = await admin.post("/v1/interactions:import", content=ndjson(good), headers=NDJSON)
    assert imported.status_code == 200, imported.text
    assert (imported.json()["imported"], imported.json()["rejected"]) == (6_000, 0)
    after = (await admin.get(f"/v1/customers/{customer}/recommendations", params={"mode": "buy_again"})).json()
    assert after["strategy"] == "personal", after
