from datetime import UTC, datetime, timedelta

import httpx

from tests.coupon.helpers import create_campaign, uid


async def test_create_get_and_stats(coupon: httpx.AsyncClient) -> None:
    created = await create_campaign(
        coupon,
        discount={"type": "percent", "value": "15", "currency": "EUR", "max_discount": "20.00"},
        code={"prefix": "sum-", "length": 12, "charset": "alphanumeric"},
        limits={"per_code": 3, "per_customer": 2, "total": 100},
        min_order_total="25.00",
        categories=["shoes"],
    )
    assert created["code"] == {"prefix": "SUM", "length": 12, "charset": "alphanumeric"}
    assert created["limits"] == {"per_code": 3, "per_customer": 2, "total": 100}
    assert created["stats"] == {"generated": 0, "issued": 0, "redeemed": 0, "rolled_back": 0}
    fetched = (await coupon.get(f"/v1/coupon-campaigns/{created['id']}")).json()
    assert fetched["discount"]["max_discount"] == "20.00"
    assert fetched["active"] is True


async def test_defaults(coupon: httpx.AsyncClient) -> None:
    response = await coupon.post(
        "/v1/coupon-campaigns",
        json={"name": "d", "discount": {"type": "fixed_amount", "value": "5", "currency": "USD"}},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["code"] == {"prefix": "", "length": 12, "charset": "unambiguous"}
    assert body["limits"] == {"per_code": 1, "per_customer": 1, "total": None}


async def test_bad_input_is_422(coupon: httpx.AsyncClient) -> None:
    bad = [
        {"name": "x", "discount": {"type": "fixed_amount", "value": "5"}},  # no currency
        {"name": "x", "discount": {"type": "percent", "value": "150"}},
        {"name": "x", "discount": {"type": "percent", "value": "10"}, "surprise": 1},
        {"name": "x", "discount": {"type": "fixed_amount", "value": "5.001", "currency": "EUR"}},
        {"name": "x", "discount": {"type": "percent", "value": "10"}, "min_order_total": "10"},  # no currency
        {"name": "x", "discount": {"type": "percent", "value": "10"}, "code": {"charset": "emoji"}},
    ]
    for body in bad:
        response = await coupon.post("/v1/coupon-campaigns", json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_patch_deactivates_and_extends(coupon: httpx.AsyncClient) -> None:
    created = await create_campaign(coupon, valid_until=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    later = datetime.now(UTC) + timedelta(days=30)
    response = await coupon.patch(
        f"/v1/coupon-campaigns/{created['id']}", json={"active": False, "valid_until": later.isoformat()}
    )
    assert response.status_code == 200
    assert response.json()["active"] is False
    assert datetime.fromisoformat(response.json()["valid_until"]) == later
    missing = await coupon.patch(f"/v1/coupon-campaigns/{uid('')[:8]}-0000-0000-0000-000000000000", json={})
    assert (missing.status_code, missing.json()["code"]) == (404, "campaign_not_found")


async def test_list_is_paginated(coupon: httpx.AsyncClient) -> None:
    ids = {(await create_campaign(coupon))["id"] for _ in range(3)}
    seen: set[str] = set()
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await coupon.get("/v1/coupon-campaigns", params=params)).json()
        assert len(page["items"]) <= 2
        seen |= {item["id"] for item in page["items"]}
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ids <= seen
    assert (await coupon.get("/v1/coupon-campaigns", params={"cursor": "garbage"})).status_code == 422
