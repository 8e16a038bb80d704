"""Feedback shapes recommendations: a refunded product is not offered back, the products of an order rated as a
detractor weigh less, and a survey's preference question updates the customer's preferences."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Platform
from tests.recommend.conftest import Retail, load_retail
from tests.survey.conftest import LINK


def uid(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def refund(purchase_id: str, customer: str, amount: str | None) -> dict[str, Any]:
    return {"purchase_id": purchase_id, "refund_id": f"rf-{uuid.uuid4().hex[:8]}", "customer_id": customer,
            "amount": amount, "total": "10.00", "currency": "EUR"}  # fmt: skip


def event(type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    # as the relay sends it: the business time is the purchase's own, when the payload names one
    now = datetime.now(UTC).isoformat()
    return {"id": str(uuid.uuid4()), "type": type_, "occurred_at": payload.get("occurred_at", now), "published_at": now,
            "payload": payload}  # fmt: skip


def purchase(customer: str, purchase_id: str, products: list[str], at: datetime, **extra: Any) -> dict[str, Any]:
    return event(
        "purchase.created",
        {
            "purchase_id": purchase_id,
            "customer_id": customer,
            "occurred_at": at.isoformat(),
            "currency": "EUR",
            "total": "10.00",
            "items": [
                {"product_id": p, "name": p, "category": "Other", "quantity": 1, "unit_price": "1.00"} for p in products
            ],
            **extra,
        },
    )


async def deliver(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    for _ in range(2):  # a redelivery changes nothing
        response = await client.post("/internal/events", json=body)
        assert response.status_code == 200, response.text


async def shelf(api: httpx.AsyncClient, customer: str, mode: str) -> dict[str, float]:
    response = await api.get(f"/v1/customers/{customer}/recommendations", params={"mode": mode, "limit": 100})
    assert response.status_code == 200, response.text
    return {i["product_id"]: i["score"] for i in response.json()["items"]}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def popular_products(retail: Retail, n: int) -> list[str]:
    counts: dict[str, int] = {}
    for history in retail.history.values():
        for product in history:
            counts[product] = counts.get(product, 0) + 1
    return sorted(counts, key=lambda p: (-counts[p], p))[:n]


async def test_a_refunded_product_is_not_offered_back(platform: Platform, retail: Retail) -> None:
    customer = uid()
    first, second, third = popular_products(retail, 3)
    now = datetime.now(UTC)
    async with platform.service_client("recommend") as api:
        await deliver(api, purchase(customer, uid("p"), [first, second], now - timedelta(days=3)))
        await deliver(api, purchase(customer, "p-kept-" + customer, [third], now - timedelta(days=2)))
        partial = uid("p")
        await deliver(api, purchase(customer, partial, [first, third], now - timedelta(days=1)))
        assert {first, second, third} <= set(await shelf(api, customer, "buy_again"))
        # a partial refund of a purchase of two products does not say which: nothing changes
        await deliver(
            api,
            event("purchase.refunded", refund(partial, customer, "1.00")),
        )
        assert {first, second, third} <= set(await shelf(api, customer, "buy_again"))
        # a whole refund of the first purchase: its two products are never offered back to this customer
        refunded = (await api.get(f"/v1/customers/{customer}/recommendations")).json()
        first_purchase = await _purchase_of(platform, customer, second)
        await deliver(
            api,
            event("purchase.refunded", refund(first_purchase, customer, None)),
        )
        for mode in ("buy_again", "mixed", "discover"):
            offered = set(await shelf(api, customer, mode))
            assert not offered & {first, second}, mode
        assert third in await shelf(api, customer, "buy_again")
        assert refunded["items"]
    # other customers still get them
    other = max(retail.history, key=lambda c: (first in retail.history[c], len(retail.history[c])))
    async with platform.service_client("recommend") as api:
        assert first in await shelf(api, other, "buy_again")


async def _purchase_of(platform: Platform, customer: str, product: str) -> str:
    connection = await asyncpg.connect(platform.env["DATABASE_URL"].replace("+asyncpg", ""))
    try:
        source = await connection.fetchval(
            "SELECT source FROM recommend.interactions WHERE customer_id = $1 AND product_id = $2",
            customer,
            product,
        )
    finally:
        await connection.close()
    return str(source).removeprefix("purchase:")


PREFERENCE_SURVEY = [
    {"id": "nps", "type": "nps", "text": "How likely are you to recommend us?", "required": True},
    {
        "id": "likes",
        "type": "choice",
        "text": "What do you shop for most?",
        "required": False,
        "options": ["Lights", "Kitchen things", "Nothing in particular"],
        "preference_categories": {"Lights": "Candles & lights", "Kitchen things": "Kitchen"},
    },
]


@pytest.mark.own_platform(services=["recommend", "survey", "gateway"])  # its post-purchase survey is programme-wide
async def test_a_detractors_order_weighs_less_and_a_preference_answer_updates_preferences(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    retail = await load_retail(platform)
    customer = uid()
    rated, other = popular_products(retail, 2)
    now = datetime.now(UTC)
    created = await admin.post(
        "/v1/surveys",
        json={
            "name": "After your order",
            "questions": PREFERENCE_SURVEY,
            "cooldown_days": 0,
            "send_after_purchase": True,
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["questions"][1]["preference_categories"]["Lights"] == "Candles & lights"
    order = uid("p")
    rated_order = purchase(customer, order, [rated], now - timedelta(days=2), email=f"{customer}@example.com")
    async with platform.service_client("recommend") as api, platform.service_client("survey") as survey:
        # as the gateway's relay would deliver the purchases
        await deliver(api, rated_order)
        await deliver(survey, rated_order)
        await deliver(api, purchase(customer, uid("p"), [other], now - timedelta(days=2)))
        before = await shelf(api, customer, "buy_again")
        await api.put(
            f"/v1/customers/{customer}/preferences", json={"categories": [], "excluded_categories": ["kitchen"]}
        )

        token = await _invitation_token(platform, customer)
        answers = [{"question_id": "nps", "value": 2}, {"question_id": "likes", "value": "Kitchen things"}]
        answer = await survey.post("/v1/survey-responses", json={"token": token, "answers": answers})
        assert answer.status_code == 201, answer.text

        async def preferred() -> bool:
            got = await api.get(f"/v1/customers/{customer}/preferences")
            return got.status_code == 200 and got.json()["categories"] == ["Kitchen"]

        await eventually(preferred)
        # the answer's category is no longer excluded
        assert (await api.get(f"/v1/customers/{customer}/preferences")).json()["excluded_categories"] == []

        async def weighed_less() -> bool:
            after = await shelf(api, customer, "buy_again")
            ratio_before = before[rated] / before[other]
            return abs(after[rated] / after[other] - 0.3 * ratio_before) < 1e-3 * ratio_before

        await eventually(weighed_less)


async def _invitation_token(platform: Platform, customer: str) -> str:
    connection = await asyncpg.connect(platform.env["DATABASE_URL"].replace("+asyncpg", ""))
    try:
        row = await connection.fetchrow(
            "SELECT i.purchase_id, m.message FROM survey.invitations i"
            " JOIN survey.mail_outbox m ON m.invitation_id = i.id WHERE i.customer_id = $1",
            customer,
        )
    finally:
        await connection.close()
    assert row is not None and row["purchase_id"]
    message = email.message_from_bytes(row["message"], policy=email.policy.default)
    part = message.get_body(("plain",))  # type: ignore[attr-defined]
    found = LINK.search(part.get_content())
    assert found
    return found.group(2)


async def test_a_preference_question_must_be_a_choice_question_naming_its_own_options(admin: httpx.AsyncClient) -> None:
    bad_option = [{**PREFERENCE_SURVEY[1], "preference_categories": {"Boats": "Marine"}}]
    not_choice = [{**PREFERENCE_SURVEY[0], "preference_categories": {"10": "Kitchen"}}]
    for questions in (bad_option, not_choice):
        response = await admin.post("/v1/surveys", json={"name": "Bad", "questions": questions})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
