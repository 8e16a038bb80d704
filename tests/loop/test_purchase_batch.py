"""POST /v1/purchases:batch: per-line results (accepted, duplicate, rejected with errors), idempotent by
purchase_id whatever the file, and fanned out in batches that leave exactly what one-by-one purchases leave."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import ADMIN_KEY, SERVICES, Platform
from tests.loop.helpers import purchase_body, wait_for_deliveries
from tests.support.database import create_database, drop_database, server_url
from tests.support.servers import InProcessServer, free_port

NDJSON = {"Content-Type": "application/x-ndjson"}


def ndjson(*lines: dict[str, Any] | str) -> bytes:
    return b"\n".join(line.encode() if isinstance(line, str) else orjson.dumps(line) for line in lines) + b"\n"


class TestPerLineResults:
    async def test_each_line_is_accepted_a_duplicate_or_rejected_alone(self, admin: httpx.AsyncClient) -> None:
        good, other = purchase_body(), purchase_body()
        changed = {**good, "total": "41.00"}
        bad_total = {**purchase_body(), "total": "-1"}
        unknown_field = {**purchase_body(), "surprise": True}
        body = ndjson(good, "{not json", bad_total, good, changed, "", other, unknown_field)
        response = await admin.post("/v1/purchases:batch", content=body, headers=NDJSON)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["accepted"] == 2
        assert result["duplicates"] == 1  # line 4 repeats line 1
        rejected = {r["line"]: r for r in result["rejected"]}
        assert sorted(rejected) == [2, 3, 5, 8]
        assert [e["field"] for e in rejected[2]["errors"]] == ["line"]
        assert [e["field"] for e in rejected[3]["errors"]] == ["total"]
        assert rejected[5]["errors"][0]["field"] == "purchase_id"
        assert "purchase_conflict" in rejected[5]["errors"][0]["message"]
        assert [e["field"] for e in rejected[8]["errors"]] == ["surprise"]
        for accepted in (good, other):
            deliveries = await wait_for_deliveries(admin, accepted["purchase_id"])
            assert deliveries == {name: "delivered" for name in ("points", "coupon", "recommend", "survey")}
        for refused in (bad_total, unknown_field):
            assert (await admin.get(f"/v1/purchases/{refused['purchase_id']}")).status_code == 404

    async def test_an_item_is_judged_as_strictly_as_the_purchase(self, admin: httpx.AsyncClient) -> None:
        def with_item(**changes: object) -> dict[str, Any]:
            body = purchase_body()
            return {**body, "items": [{**body["items"][0], **changes}]}

        lines = [with_item(colour="red"), with_item(unit_price="0.001"), with_item(), with_item(quantity="2")]
        response = await admin.post("/v1/purchases:batch", content=ndjson(*lines), headers=NDJSON)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["accepted"] == 1
        rejected = {r["line"]: [e["field"] for e in r["errors"]] for r in result["rejected"]}
        assert rejected == {1: ["items.0.colour"], 2: ["line"], 4: ["items.0.quantity"]}
        for refused in (with_item(colour="red"), with_item(quantity="2")):
            single = await admin.post("/v1/purchases", json=refused)
            assert single.status_code == 422, single.text

    async def test_a_file_sent_again_changes_nothing(self, admin: httpx.AsyncClient) -> None:
        single = purchase_body(total="12.00")
        assert (await admin.post("/v1/purchases", json=single)).status_code == 202
        bodies = [purchase_body(total="10.00") for _ in range(5)]
        file = ndjson(*bodies, single)
        first = (await admin.post("/v1/purchases:batch", content=file, headers=NDJSON)).json()
        again = (await admin.post("/v1/purchases:batch", content=file, headers=NDJSON)).json()
        assert first == {"accepted": 5, "duplicates": 1, "rejected": []}
        assert again == {"accepted": 0, "duplicates": 6, "rejected": []}
        # and a purchase of a batch sent again alone answers as a repeat does
        assert (await admin.post("/v1/purchases", json=bodies[0])).status_code == 202
        assert (await admin.post("/v1/purchases", json={**bodies[0], "total": "11.00"})).status_code == 409
        customer = bodies[0]["customer_id"]
        await wait_for_deliveries(admin, bodies[0]["purchase_id"])
        ledger = (await admin.get(f"/v1/customers/{customer}/points/transactions")).json()["items"]
        assert [(t["type"], t["reference"]) for t in ledger] == [("earn", bodies[0]["purchase_id"])]

    async def test_an_idempotency_key_replays_the_first_answer(self, admin: httpx.AsyncClient) -> None:
        file = ndjson(purchase_body(), purchase_body())
        headers = {**NDJSON, "Idempotency-Key": f"batch-{time.time_ns()}"}
        first = await admin.post("/v1/purchases:batch", content=file, headers=headers)
        again = await admin.post("/v1/purchases:batch", content=file, headers=headers)
        assert first.json() == again.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
        assert again.headers.get("idempotent-replayed") == "true"

    async def test_limits_and_who_may_import(self, admin: httpx.AsyncClient, platform: Platform) -> None:
        too_many = b"{}\n" * 10_001
        response = await admin.post("/v1/purchases:batch", content=too_many, headers=NDJSON)
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "payload_too_large"
        wrong_type = await admin.post("/v1/purchases:batch", content=ndjson(purchase_body()))
        assert wrong_type.status_code == 415
        key = (await admin.post("/v1/api-keys", json={"name": "till", "scopes": ["purchases:write"]})).json()["key"]
        async with platform.client(key) as partner:
            refused = await partner.post("/v1/purchases:batch", content=ndjson(purchase_body()), headers=NDJSON)
        assert refused.status_code == 403


# Batched deliveries leave exactly what single ones leave: the same history sent twice, under two prefixes, on a
# platform of its own (its rules and tiers are global): one purchase at a time, each delivered before the next,
# and as one batch file.

LEVER_CUSTOMERS = 8


@pytest.fixture(scope="module")
async def own_platform(platform_env: dict[str, str]) -> AsyncIterator[tuple[str, str]]:
    """The four services and the gateway in this process, on a database of their own: (gateway URL, database URL)."""
    base = await asyncio.to_thread(server_url)
    url, name = await create_database(base)
    ports = {n: free_port() for n in (*SERVICES, "gateway")}
    urls = {f"{n.upper()}_URL": f"http://127.0.0.1:{ports[n]}" for n in SERVICES}
    common = {"DATABASE_URL": url, "OUTBOX_POLL_SECONDS": 0.05, "DB_POOL_SIZE": 4}
    servers: list[InProcessServer] = []
    try:
        for name_ in SERVICES:
            module = importlib.import_module(f"{name_}.app")
            settings_class = {
                "coupon": "coupon.settings.CouponSettings",
                "points": "points.settings.PointsSettings",
                "recommend": "recommend.settings.RecommendSettings",
                "survey": "survey.settings.SurveySettings",
            }[name_]
            settings_module, class_name = settings_class.rsplit(".", 1)
            settings = getattr(importlib.import_module(settings_module), class_name)(**common)
            servers.append(await InProcessServer(module.create_app(settings), port=ports[name_]).start())
        from gateway.app import create_app
        from gateway.settings import GatewaySettings

        gateway = GatewaySettings(**common, **urls)  # type: ignore[call-arg]
        servers.append(await InProcessServer(create_app(gateway), port=ports["gateway"]).start())
        yield f"http://127.0.0.1:{ports['gateway']}", url
    finally:
        for server in reversed(servers):
            await server.stop()
        await drop_database(base, name)


def history() -> list[dict[str, Any]]:
    """A history being imported (old purchases: they earn and count, but wake no one), then recent purchases (so
    that coupons and surveys follow them), several per customer, interleaved."""
    now = datetime.now(UTC)
    bodies = []
    for n in range(-12, 30):
        customer = f"c{n % LEVER_CUSTOMERS}"
        total = f"{40 + 17 * abs(n)}.00"
        # the old ones 452 to 496 days ago: out of the tiers' 365 days before now, not of each other's
        occurred_at = now - (timedelta(hours=30 - n) if n >= 0 else timedelta(days=500 + 4 * n))
        bodies.append(
            {
                "purchase_id": f"p{n}",
                "customer_id": customer,
                "email": f"{customer}@example.com",
                "occurred_at": occurred_at.isoformat(),
                "currency": "GBP",
                "total": total,
                "items": [
                    {
                        "product_id": f"sku-{n % 5}",
                        "name": "Cake stand",
                        "category": "Kitchen",
                        "unit_price": total,
                        "quantity": 1 + n % 3,
                    }
                ],
            }
        )
    return bodies


def prefixed(body: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {
        **body,
        "purchase_id": prefix + body["purchase_id"],
        "customer_id": prefix + body["customer_id"],
        "email": prefix + body["email"],
    }


async def set_up_levers(client: httpx.AsyncClient) -> None:
    rules = {"points_per_currency_unit": "1", "category_multipliers": {"Kitchen": "2"}, "bonus_campaigns": [],
             "expires_after_days": 365}  # fmt: skip
    assert (await client.put("/v1/points/rules", json=rules)).status_code == 200
    # a tier that later purchases reach: the multiplier of each depends on the ones before it
    tiers = [{"name": "Member", "threshold": 0, "earn_multiplier": "1"},
             {"name": "Silver", "threshold": 400, "earn_multiplier": "1.5"}]  # fmt: skip
    assert (await client.put("/v1/points/tiers", json=tiers)).status_code == 200
    campaign = await client.post(
        "/v1/coupon-campaigns",
        json={"name": "Second visit", "discount": {"type": "percent", "value": "10"},
              "code": {"length": 12, "charset": "unambiguous"}, "limits": {"per_code": 1, "per_customer": 5}},
    )  # fmt: skip
    assert campaign.status_code == 201, campaign.text
    triggers = ({"type": "nth_purchase", "n": 2}, {"type": "order_total_at_least", "amount": "300", "currency": "GBP"})
    for trigger in triggers:
        rule = await client.post("/v1/coupon-rules", json={"campaign_id": campaign.json()["id"], "trigger": trigger})
        assert rule.status_code == 201, rule.text
    survey = await client.post(
        "/v1/surveys",
        json={"name": "How was your order?", "questions": [{"id": "nps", "type": "nps", "text": "Recommend us?",
              "required": True}], "cooldown_days": 90, "send_after_purchase": True},
    )  # fmt: skip
    assert survey.status_code == 201, survey.text


async def drained(client: httpx.AsyncClient, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = (await client.get("/v1/admin/deliveries", params={"status": "pending", "limit": 1})).json()
        if not pending["items"]:
            failed = (await client.get("/v1/admin/deliveries", params={"status": "failed"})).json()["items"]
            assert failed == []
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("deliveries did not drain")


async def state_of(client: httpx.AsyncClient, database: asyncpg.Connection, prefix: str, customer: str) -> Any:
    """Everything the four consumers keep about one customer, with the prefix taken out."""
    who = prefix + customer
    points = (await client.get(f"/v1/customers/{who}/points")).json()
    ledger = (await client.get(f"/v1/customers/{who}/points/transactions", params={"limit": 200})).json()["items"]
    wallet = (await client.get(f"/v1/customers/{who}/coupons", params={"limit": 200})).json()["items"]
    # scheduled a day after the purchase (the default delay), so not yet listed as pending: read the schedule
    surveys = await database.fetch(
        "SELECT survey_id, status, source FROM survey.invitations WHERE customer_id = $1 ORDER BY survey_id", who
    )
    products = await database.fetch(
        "SELECT product_id, purchases, quantity FROM recommend.customer_products WHERE customer_id = $1 "
        "ORDER BY product_id",
        who,
    )
    interactions = await database.fetch(
        "SELECT product_id, quantity, occurred_at, substr(source, $2) FROM recommend.interactions"
        " WHERE customer_id = $1 ORDER BY occurred_at, product_id",
        who,
        len("purchase:" + prefix) + 1,
    )
    counted = await database.fetch(
        "SELECT substr(purchase_id, $2), ordinal FROM coupon.purchases_seen WHERE customer_id = $1 ORDER BY 1",
        who,
        len(prefix) + 1,
    )
    expiring = [(e["points"], e["expires_at"][:10]) for e in points["expiring"]]
    return {
        "points": (points["balance"], points["tier"], points["qualifying_points"], expiring),
        # an expiry's reference names its lot (ids differ between the halves) and the balances after each entry
        # depend on when the hourly job ran; the final balance is compared above
        "ledger": sorted(
            (t["type"], t["points"], "lot" if t["type"] == "expire" else t["reference"].removeprefix(prefix))
            for t in ledger
        ),
        "wallet": sorted((c["campaign_id"], c.get("status")) for c in wallet),
        "surveys": [tuple(r) for r in surveys],
        "recommend": [tuple(r) for r in products],
        "interactions": [tuple(r) for r in interactions],
        "counted": [tuple(r) for r in counted],
    }


async def test_batched_deliveries_leave_what_single_ones_leave(own_platform: tuple[str, str]) -> None:
    gateway_url, database_url = own_platform
    bodies = history()
    async with httpx.AsyncClient(
        base_url=gateway_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
    ) as client:
        await set_up_levers(client)
        for body in bodies:
            single = prefixed(body, "one-")
            assert (await client.post("/v1/purchases", json=single)).status_code == 202
            await wait_for_deliveries(client, single["purchase_id"])
        # the history imported first (its earnings go set-based: no tier changes now), then the recent purchases
        imported = [body for body in bodies if body["purchase_id"].startswith("p-")]
        for part in (imported, bodies[len(imported) :]):
            batch = ndjson(*(prefixed(body, "many-") for body in part))
            answer = await client.post("/v1/purchases:batch", content=batch, headers=NDJSON)
            assert answer.json() == {"accepted": len(part), "duplicates": 0, "rejected": []}
            await drained(client)
        # the hourly expiry job may have run during the first half only (its first run is a minute after start):
        # due lots are expired for both halves before they are compared
        assert (await client.post("/v1/points/expiry-runs")).status_code == 201

        states = {}
        connection = await asyncpg.connect(database_url)
        try:
            for n in range(LEVER_CUSTOMERS):
                one = await state_of(client, connection, "one-", f"c{n}")
                many = await state_of(client, connection, "many-", f"c{n}")
                assert one == many, f"c{n}"
                states[n] = one
        finally:
            await connection.close()
    # the comparison is not vacuous: the levers did fire
    assert any(s["points"][1] == "Silver" for s in states.values())
    assert all(len(s["wallet"]) >= 1 for s in states.values())
    assert all(len(s["surveys"]) == 1 for s in states.values())
    assert all(s["recommend"] for s in states.values())
