import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from coupon.code_format import CodeFormat
from tests.coupon.helpers import create_campaign, generate, issue, order, uid


@pytest.mark.real_commits
async def test_concurrent_redemptions_of_a_single_use_code(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon)
    (code,) = await generate(coupon, campaign["id"], 1)
    responses = await asyncio.gather(
        *(coupon.post(f"/v1/coupons/{code}/redemptions", json=order(uid("c-"))) for _ in range(100))
    )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 99}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"coupon_exhausted"}
    stats = (await coupon.get(f"/v1/coupon-campaigns/{campaign['id']}")).json()["stats"]
    assert stats["redeemed"] == 1


@pytest.mark.real_commits
async def test_total_limit_holds_under_concurrency(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon, limits={"total": 5})
    codes = await generate(coupon, campaign["id"], 50)
    responses = await asyncio.gather(
        *(coupon.post(f"/v1/coupons/{code}/redemptions", json=order(uid("c-"))) for code in codes)
    )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 5, 409: 45}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"coupon_exhausted"}


async def test_per_customer_limit_across_codes(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon, limits={"per_customer": 2})
    codes = await generate(coupon, campaign["id"], 12)
    customer = uid("c-")
    responses = await asyncio.gather(
        *(coupon.post(f"/v1/coupons/{code}/redemptions", json=order(customer)) for code in codes)
    )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 2, 409: 10}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"customer_limit_reached"}
    # another customer is not affected
    left = [code for code, r in zip(codes, responses, strict=True) if r.status_code == 409]
    assert (await coupon.post(f"/v1/coupons/{left[0]}/redemptions", json=order(uid("c-")))).status_code == 201


async def test_multi_use_code(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon, limits={"per_code": 3, "per_customer": 1})
    (code,) = await generate(coupon, campaign["id"], 1)
    responses = await asyncio.gather(
        *(coupon.post(f"/v1/coupons/{code}/redemptions", json=order(uid("c-"))) for _ in range(20))
    )
    assert Counter(r.status_code for r in responses) == {201: 3, 409: 17}


async def test_redemption_is_idempotent_by_order_id(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon, limits={"per_code": 5, "per_customer": 5})
    (code,) = await generate(coupon, campaign["id"], 1)
    body = order(uid("c-"))
    responses = await asyncio.gather(*(coupon.post(f"/v1/coupons/{code}/redemptions", json=body) for _ in range(10)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["redemption_id"] for r in responses}) == 1
    stats = (await coupon.get(f"/v1/coupon-campaigns/{campaign['id']}")).json()["stats"]
    assert stats["redeemed"] == 1


async def test_rollback_gives_the_use_back(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon, limits={"per_code": 1, "per_customer": 1, "total": 1})
    (code,) = await generate(coupon, campaign["id"], 1)
    customer = uid("c-")
    first = await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(customer))
    assert first.status_code == 201
    assert first.json()["discount_amount"] == "10.00"
    assert (await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(customer))).status_code == 409
    redemption_id = first.json()["redemption_id"]
    rolled = await coupon.post(f"/v1/coupon-redemptions/{redemption_id}/rollback")
    assert rolled.status_code == 200
    assert rolled.json()["status"] == "rolled_back"
    again = await coupon.post(f"/v1/coupon-redemptions/{redemption_id}/rollback")
    assert again.status_code == 200  # a repeat changes nothing
    # the code, the customer's and the campaign's use are all back
    assert (await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(customer))).status_code == 201
    stats = (await coupon.get(f"/v1/coupon-campaigns/{campaign['id']}")).json()["stats"]
    assert stats["redeemed"] == 1
    assert stats["rolled_back"] == 1
    assert (
        await coupon.post(f"/v1/coupon-redemptions/{uid()[:8]}-0000-4000-8000-000000000000/rollback")
    ).status_code == 404


async def test_expired_and_not_yet_valid(coupon: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    campaign = await create_campaign(coupon, valid_from=(now - timedelta(days=2)).isoformat())
    (code,) = await generate(coupon, campaign["id"], 1)
    await coupon.patch(
        f"/v1/coupon-campaigns/{campaign['id']}", json={"valid_until": (now - timedelta(days=1)).isoformat()}
    )
    refused = await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(uid("c-")))
    assert refused.status_code == 422
    assert (refused.json()["code"], refused.json()["reason"]) == ("coupon_not_applicable", "expired")
    checked = await coupon.post(
        f"/v1/coupons/{code}/validation", json={"customer_id": uid("c-"), "order_total": "10.00", "currency": "EUR"}
    )
    assert checked.json() == {"valid": False, "discount_amount": None, "reason": "expired"}
    # extending the campaign makes the code good again
    await coupon.patch(
        f"/v1/coupon-campaigns/{campaign['id']}", json={"valid_until": (now + timedelta(days=1)).isoformat()}
    )
    assert (await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(uid("c-")))).status_code == 201

    future = await create_campaign(coupon, valid_from=(now + timedelta(days=1)).isoformat())
    (later,) = await generate(coupon, future["id"], 1)
    refused = await coupon.post(f"/v1/coupons/{later}/redemptions", json=order(uid("c-")))
    assert refused.json()["reason"] == "not_yet_valid"


async def test_validation_answers_without_using_the_code(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(
        coupon, discount={"type": "percent", "value": "12.5", "currency": "EUR", "max_discount": "10.00"}
    )
    (code,) = await generate(coupon, campaign["id"], 1)
    body = {"customer_id": uid("c-"), "order_total": "40.00", "currency": "EUR"}
    first = await coupon.post(f"/v1/coupons/{code}/validation", json=body)
    assert first.status_code == 200
    assert first.json() == {"valid": True, "discount_amount": "5.00", "reason": None}
    capped = await coupon.post(f"/v1/coupons/{code}/validation", json=body | {"order_total": "200.00"})
    assert capped.json()["discount_amount"] == "10.00"
    other_currency = await coupon.post(f"/v1/coupons/{code}/validation", json=body | {"currency": "USD"})
    assert other_currency.json() == {"valid": False, "discount_amount": None, "reason": "currency_mismatch"}
    assert (await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(uid("c-")))).status_code == 201
    used = await coupon.post(f"/v1/coupons/{code}/validation", json=body)
    assert used.json()["reason"] == "coupon_exhausted"


async def test_minimum_order_total(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(
        coupon, discount={"type": "fixed_amount", "value": "15.00", "currency": "EUR"}, min_order_total="50.00"
    )
    (code,) = await generate(coupon, campaign["id"], 1)
    refused = await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(uid("c-"), total="49.99"))
    assert refused.status_code == 422
    assert refused.json()["reason"] == "minimum_not_met"
    ok = await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(uid("c-"), total="50.00"))
    assert ok.status_code == 201
    assert ok.json()["discount_amount"] == "15.00"


async def test_code_assigned_to_another_customer_is_refused(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon)
    owner, other = uid("c-"), uid("c-")
    code = await issue(coupon, campaign["id"], owner)
    refused = await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(other))
    assert refused.status_code == 422
    assert refused.json()["reason"] == "assigned_to_another_customer"
    checked = await coupon.post(
        f"/v1/coupons/{code}/validation", json={"customer_id": other, "order_total": "10.00", "currency": "EUR"}
    )
    assert checked.json()["reason"] == "assigned_to_another_customer"
    assert (await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(owner))).status_code == 201


async def test_case_and_separators_are_ignored(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon, code={"prefix": "SPRING", "length": 14, "charset": "unambiguous"})
    (code,) = await generate(coupon, campaign["id"], 1)
    typed = "spring-" + " ".join(code[6:][i : i + 4] for i in range(0, 14, 4)).lower()
    response = await coupon.post(f"/v1/coupons/{typed}/redemptions", json=order(uid("c-")))
    assert response.status_code == 201, response.text
    assert response.json()["code"] == code


async def test_a_wrong_check_character_is_refused_before_lookup(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon, code={"prefix": "CHK", "length": 14, "charset": "unambiguous"})
    (code,) = await generate(coupon, campaign["id"], 1)
    fmt = CodeFormat("CHK", 14, "unambiguous")
    typo = code[:5] + next(c for c in fmt.alphabet if c != code[5]) + code[6:]
    assert not fmt.accepts(typo)
    response = await coupon.post(f"/v1/coupons/{typo}/redemptions", json=order(uid("c-")))
    assert response.status_code == 404
    assert (response.json()["code"], response.json()["reason"]) == ("coupon_not_found", "check_character_mismatch")
    # a well-formed code that does not exist is a different 404
    from coupon.code_format import check_character

    body = "".join(reversed(code[3:-1]))
    unknown = "CHK" + body + check_character(body, "unambiguous")
    response = await coupon.post(f"/v1/coupons/{unknown}/redemptions", json=order(uid("c-")))
    assert response.status_code == 404
    assert response.json()["reason"] == "unknown_code"


def _partner(prefix: str) -> dict[str, str]:
    return {"X-Caller-Kind": "partner", "X-Caller-Id": uid(prefix), "X-Caller-Scopes": "coupons:read coupons:write"}


async def _guess(coupon: httpx.AsyncClient, headers: dict[str, str], customer: str, i: int) -> httpx.Response:
    path = "redemptions" if i % 2 else "validation"
    body = order(customer) if i % 2 else {"customer_id": customer, "order_total": "1.00", "currency": "EUR"}
    return await coupon.post(f"/v1/coupons/NOPE{i:08d}/{path}", json=body, headers=headers)


async def test_failed_guesses_are_throttled_per_customer_and_a_valid_code_still_works(
    coupon: httpx.AsyncClient,
) -> None:
    campaign = await create_campaign(coupon, limits={"per_code": 10, "per_customer": 10})
    (code,) = await generate(coupon, campaign["id"], 1)
    shop = _partner("shop-")  # one partner key serving every store
    fumbler = uid("c-")
    for i in range(20):
        assert (await _guess(coupon, shop, fumbler, i)).status_code == 404
    throttled = await _guess(coupon, shop, fumbler, 20)
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert throttled.json()["code"] == "coupon_guess_throttled"
    assert throttled.json()["scope"] == "customer"
    assert "20" in throttled.json()["detail"]
    # the right code is never refused by the throttle, not even for the customer who fumbled
    redeemed = await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(fumbler), headers=shop)
    assert redeemed.status_code == 201, redeemed.text
    # the key's other customers are not affected, nor is another key
    other = uid("c-")
    assert (await _guess(coupon, shop, other, 1)).status_code == 404
    assert (await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(other), headers=shop)).status_code == 201
    assert (await _guess(coupon, _partner("honest-"), fumbler, 1)).status_code == 404


async def test_past_its_ceiling_a_caller_is_refused_everything(coupon: httpx.AsyncClient) -> None:
    """Rotating customer ids gains nothing: every failure also counts against the caller, up to
    COUPON_GUESS_CALLER_LIMIT (200); past it even an existing code is refused, before any lookup."""
    campaign = await create_campaign(coupon, limits={"per_code": 10, "per_customer": 10})
    (code,) = await generate(coupon, campaign["id"], 1)
    guesser = _partner("guesser-")
    statuses = [(await _guess(coupon, guesser, uid("c-"), i)).status_code for i in range(200)]
    assert statuses == [404] * 200
    refused = await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(uid("c-")), headers=guesser)
    assert refused.status_code == 429
    assert refused.json()["scope"] == "caller"
    assert int(refused.headers["retry-after"]) > 0
    stats = (await coupon.get(f"/v1/coupon-campaigns/{campaign['id']}")).json()["stats"]
    assert stats["redeemed"] == 0
    # another caller still redeems
    assert (
        await coupon.post(f"/v1/coupons/{code}/redemptions", json=order(uid("c-")), headers=_partner("honest-"))
    ).status_code == 201


async def test_customer_tokens_spend_the_budget_of_whoever_minted_them(coupon: httpx.AsyncClient) -> None:
    """A partner that mints a token per guess gets no fresh budget: the tokens' failures count against it."""
    minter = f"partner:{uuid.uuid4()}"
    statuses = []
    for i in range(201):
        customer = uid("c-")
        headers = {"X-Caller-Kind": "customer", "X-Caller-Id": customer, "X-Caller-Issuer": minter}
        statuses.append((await _guess(coupon, headers, customer, i)).status_code)
    assert statuses == [404] * 200 + [429]
    # a token minted by someone else is not affected
    customer = uid("c-")
    other = {"X-Caller-Kind": "customer", "X-Caller-Id": customer, "X-Caller-Issuer": f"partner:{uuid.uuid4()}"}
    assert (await _guess(coupon, other, customer, 1)).status_code == 404
