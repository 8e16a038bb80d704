import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Platform
from tests.coupon.helpers import create_campaign, generate, issue, now_iso, order, uid


async def _wallet(client: httpx.AsyncClient, customer: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/customers/{customer}/coupons", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


async def test_issuance_and_wallet(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon)
    pregenerated = set(await generate(coupon, campaign["id"], 2))
    customer = uid("c-")
    codes = [await issue(coupon, campaign["id"], customer) for _ in range(3)]
    assert set(codes[:2]) == pregenerated  # unassigned codes are handed out first
    assert codes[2] not in pregenerated  # then one is made
    stats = (await coupon.get(f"/v1/coupon-campaigns/{campaign['id']}")).json()["stats"]
    assert (stats["generated"], stats["issued"]) == (3, 3)

    assert (await coupon.post(f"/v1/coupons/{codes[0]}/redemptions", json=order(customer))).status_code == 201
    expired = await create_campaign(coupon, valid_from=(datetime.now(UTC) - timedelta(days=3)).isoformat())
    old = await issue(coupon, expired["id"], customer)
    await coupon.patch(
        f"/v1/coupon-campaigns/{expired['id']}",
        json={"valid_until": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
    )
    assert {c["code"] for c in await _wallet(coupon, customer, status="active")} == set(codes[1:])
    assert [c["code"] for c in await _wallet(coupon, customer, status="redeemed")] == [codes[0]]
    assert [c["code"] for c in await _wallet(coupon, customer, status="expired")] == [old]
    everything = await _wallet(coupon, customer)
    assert len(everything) == 4
    assert (await coupon.get(f"/v1/customers/{customer}/coupons", params={"status": "lost"})).status_code == 422

    inactive = await coupon.patch(f"/v1/coupon-campaigns/{campaign['id']}", json={"active": False})
    assert inactive.status_code == 200
    refused = await coupon.post(f"/v1/coupon-campaigns/{campaign['id']}/issuances", json={"customer_id": customer})
    assert refused.status_code == 422


async def _customer_token(admin: httpx.AsyncClient, customer: str) -> str:
    response = await admin.post("/v1/customer-tokens", json={"customer_id": customer, "ttl_seconds": 600})
    assert response.status_code == 201, response.text
    return response.json()["token"]  # type: ignore[no-any-return]


async def test_customer_token_reaches_only_its_own_coupons(platform: Platform, admin: httpx.AsyncClient) -> None:
    campaign = (
        await admin.post(
            "/v1/coupon-campaigns",
            json={"name": "app", "discount": {"type": "percent", "value": "10"}, "code": {"length": 14}},
        )
    ).json()
    alice, bob = uid("alice-"), uid("bob-")
    code = (await admin.post(f"/v1/coupon-campaigns/{campaign['id']}/issuances", json={"customer_id": alice})).json()[
        "code"
    ]
    async with platform.client(await _customer_token(admin, alice)) as app:
        assert [c["code"] for c in (await app.get(f"/v1/customers/{alice}/coupons")).json()["items"]] == [code]
        assert (await app.get(f"/v1/customers/{bob}/coupons")).status_code == 404
        # redeeming in someone else's name is refused
        as_bob = await app.post(f"/v1/coupons/{code}/redemptions", json=order(bob))
        assert as_bob.status_code == 404
        mine = await app.post(f"/v1/coupons/{code}/redemptions", json=order(alice))
        assert mine.status_code == 201, mine.text
        # customers cannot manage campaigns
        assert (await app.post("/v1/coupon-campaigns", json={})).status_code == 403


async def _event(client: httpx.AsyncClient, type_: str, payload: dict[str, Any], event_id: str | None = None) -> None:
    # as the relay sends it: the business time is the purchase's own, when the payload names one
    body = {"id": event_id or str(uuid.uuid4()), "type": type_, "occurred_at": payload.get("occurred_at", now_iso()),
            "published_at": now_iso(), "payload": payload}  # fmt: skip
    response = await client.post("/internal/events", json=body)
    assert response.status_code == 200, response.text


def _purchase(purchase_id: str, customer: str, total: str = "20.00", currency: str = "EUR") -> dict[str, Any]:
    return {
        "purchase_id": purchase_id,
        "customer_id": customer,
        "email": None,
        "occurred_at": now_iso(),
        "currency": currency,
        "total": total,
        "items": [{"product_id": "sku", "name": "Thing", "category": "misc", "unit_price": total, "quantity": 1}],
    }


async def _campaign_codes(client: httpx.AsyncClient, customer: str, campaign_id: str) -> list[str]:
    return [c["code"] for c in await _wallet(client, customer) if c["campaign_id"] == campaign_id]


@pytest.mark.own_platform(services=["coupon"])  # surprise rules fire on every purchase: none may leak
async def test_rules_crud(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon)
    created = await coupon.post(
        "/v1/coupon-rules", json={"campaign_id": campaign["id"], "trigger": {"type": "nth_purchase", "n": 1000}}
    )
    assert created.status_code == 201
    rule = created.json()
    assert rule["trigger"] == {"type": "nth_purchase", "n": 1000}
    assert (await coupon.get(f"/v1/coupon-rules/{rule['id']}")).json() == rule
    listed = (await coupon.get("/v1/coupon-rules")).json()
    assert (listed["items"], listed["next_cursor"]) == ([rule], None)
    off = await coupon.patch(f"/v1/coupon-rules/{rule['id']}", json={"active": False})
    assert off.json()["active"] is False
    bad = await coupon.post("/v1/coupon-rules", json={"campaign_id": campaign["id"], "trigger": {"type": "birthday"}})
    assert bad.status_code == 422
    missing = await coupon.post(
        "/v1/coupon-rules", json={"campaign_id": str(uuid.uuid4()), "trigger": {"type": "survey_detractor"}}
    )
    assert missing.status_code == 404
    assert [r["id"] for r in (await coupon.get("/v1/coupon-rules")).json()["items"]] == [rule["id"]]


@pytest.mark.own_platform(services=["coupon"])  # surprise rules fire on every purchase: none may leak
async def test_nth_purchase_fires_once_per_event(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon)
    rule = await coupon.post(
        "/v1/coupon-rules", json={"campaign_id": campaign["id"], "trigger": {"type": "nth_purchase", "n": 2}}
    )
    assert rule.status_code == 201
    customer = uid("c-")
    await _event(coupon, "purchase.created", _purchase(uid("p-"), customer))
    assert await _campaign_codes(coupon, customer, campaign["id"]) == []
    second = _purchase(uid("p-"), customer)
    event_id = str(uuid.uuid4())
    await _event(coupon, "purchase.created", second, event_id)
    await _event(coupon, "purchase.created", second, event_id)  # redelivered
    await _event(coupon, "purchase.created", second)  # the same purchase under another event id
    assert len(await _campaign_codes(coupon, customer, campaign["id"])) == 1
    await _event(coupon, "purchase.created", _purchase(uid("p-"), customer))  # the third: n is 2
    assert len(await _campaign_codes(coupon, customer, campaign["id"])) == 1


@pytest.mark.own_platform(services=["coupon"])  # surprise rules fire on every purchase: none may leak
async def test_order_total_rule(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon)
    await coupon.post(
        "/v1/coupon-rules",
        json={
            "campaign_id": campaign["id"],
            "trigger": {"type": "order_total_at_least", "amount": "150.00", "currency": "EUR"},
        },
    )
    customer = uid("c-")
    await _event(coupon, "purchase.created", _purchase(uid("p-"), customer, total="149.99"))
    await _event(coupon, "purchase.created", _purchase(uid("p-"), customer, total="500.00", currency="USD"))
    assert await _campaign_codes(coupon, customer, campaign["id"]) == []
    big = _purchase(uid("p-"), customer, total="150.00")
    await _event(coupon, "purchase.created", big)
    await _event(coupon, "purchase.created", big)
    assert len(await _campaign_codes(coupon, customer, campaign["id"])) == 1


@pytest.mark.own_platform(services=["coupon"])  # surprise rules fire on every purchase: none may leak
async def test_survey_detractor_rule(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon)
    rule = (
        await coupon.post(
            "/v1/coupon-rules", json={"campaign_id": campaign["id"], "trigger": {"type": "survey_detractor"}}
        )
    ).json()
    customer = uid("c-")
    payload = {
        "response_id": str(uuid.uuid4()),
        "invitation_id": str(uuid.uuid4()),
        "survey_id": str(uuid.uuid4()),
        "customer_id": customer,
        "score": 2,
    }
    await _event(coupon, "survey.detractor", payload)
    await _event(coupon, "survey.detractor", payload)
    assert len(await _campaign_codes(coupon, customer, campaign["id"])) == 1
    # another response is another event
    await _event(coupon, "survey.detractor", payload | {"response_id": str(uuid.uuid4())})
    assert len(await _campaign_codes(coupon, customer, campaign["id"])) == 2
    # a deactivated rule does nothing
    await coupon.patch(f"/v1/coupon-rules/{rule['id']}", json={"active": False})
    await _event(coupon, "survey.detractor", payload | {"response_id": str(uuid.uuid4())})
    assert len(await _campaign_codes(coupon, customer, campaign["id"])) == 2
