"""Existing codes imported into a campaign (contract v1.1): they keep their spelling, are matched without case,
unique across campaigns, count the uses already made, land in wallets, and redeem like generated codes."""

from __future__ import annotations

import uuid

import httpx

from tests.coupon.helpers import create_campaign, order
from tests.switching.test_imports import NDJSON, ndjson


def uid(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_codes_from_another_programme(admin: httpx.AsyncClient) -> None:
    campaign = await create_campaign(admin, limits={"per_code": 2, "per_customer": 5, "total": 10})
    other = await create_campaign(admin)
    tag = uuid.uuid4().hex[:8].upper()
    printed, spare = f"SUMMER-{tag}", f"fall-{tag}"
    alice = uid()
    lines = [
        {"code": printed, "customer_id": alice, "redeemed": 1},
        {"code": spare},
        {"code": "bad code!"},
        {"code": printed.lower()},
        {"code": f"X{tag}", "redeemed": 3},
        {"code": "AB"},
    ]
    path = f"/v1/coupon-campaigns/{campaign['id']}/codes:import"
    report = (await admin.post(path, content=ndjson(lines), headers=NDJSON)).json()
    assert (report["accepted"], report["duplicates"]) == (2, 1), report
    assert [(r["line"], r["errors"][0]["field"]) for r in report["rejected"]] == [
        (3, "code"),
        (5, "redeemed"),
        (6, "code"),
    ]
    again = (await admin.post(path, content=ndjson(lines[:2]), headers=NDJSON)).json()
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    clash = await admin.post(
        f"/v1/coupon-campaigns/{other['id']}/codes:import",
        content=ndjson([{"code": printed.replace("-", "")}]),
        headers=NDJSON,
    )
    assert clash.json()["rejected"][0]["errors"][0]["message"] == "This code exists in another campaign."

    wallet = (await admin.get(f"/v1/customers/{alice}/coupons")).json()["items"]
    assert [(c["code"], c["uses"]) for c in wallet] == [(printed, 1)]
    stats = (await admin.get(f"/v1/coupon-campaigns/{campaign['id']}")).json()["stats"]
    assert (stats["generated"], stats["issued"]) == (2, 1)

    typed = f"summer{tag.lower()}"  # as a customer types it: no case, no dash
    first = await admin.post(f"/v1/coupons/{typed}/redemptions", json=order(alice))
    assert first.status_code == 201, first.text
    exhausted = await admin.post(f"/v1/coupons/{typed}/redemptions", json=order(alice))
    assert exhausted.status_code == 409
    assert exhausted.json()["code"] == "coupon_exhausted"

    bob = uid()
    valid = await admin.post(
        f"/v1/coupons/{spare.upper()}/validation", json={"customer_id": bob, "order_total": "50.00", "currency": "EUR"}
    )
    assert valid.json()["valid"] is True, valid.text
    unknown = await admin.post(f"/v1/coupons/NOPE-{tag}/redemptions", json=order(bob))
    assert unknown.status_code == 404


async def test_uses_made_in_the_old_programme_count_toward_the_customers_limit(admin: httpx.AsyncClient) -> None:
    campaign = await create_campaign(admin, limits={"per_code": 5, "per_customer": 3})
    tag = uuid.uuid4().hex[:8].upper()
    used, spare = f"USED-{tag}", f"SPARE-{tag}"
    alice, bob = uid(), uid()
    lines = [{"code": used, "customer_id": alice, "redeemed": 2}, {"code": spare}]
    path = f"/v1/coupon-campaigns/{campaign['id']}/codes:import"
    assert (await admin.post(path, content=ndjson(lines), headers=NDJSON)).json()["accepted"] == 2
    # the same file again changes nothing: alice's two old uses are counted once
    assert (await admin.post(path, content=ndjson(lines), headers=NDJSON)).json()["duplicates"] == 2

    third = await admin.post(f"/v1/coupons/{spare}/redemptions", json=order(alice))
    assert third.status_code == 201, third.text
    check = await admin.post(
        f"/v1/coupons/{used}/validation", json={"customer_id": alice, "order_total": "50.00", "currency": "EUR"}
    )
    assert check.json() == {"valid": False, "discount_amount": None, "reason": "customer_limit_reached"}
    fourth = await admin.post(f"/v1/coupons/{used}/redemptions", json=order(alice))
    assert fourth.status_code == 409, fourth.text
    assert fourth.json()["code"] == "customer_limit_reached"
    # the limit is alice's: another customer still redeems the unassigned code
    assert (await admin.post(f"/v1/coupons/{spare}/redemptions", json=order(bob))).status_code == 201
