"""The attack suite: hostile requests against the real stack, one row per class of attack, each asserting the
4xx and that nothing the request touched changed.

Paths are sent byte for byte over a raw socket: an HTTP client library would normalise the very dot segments
and encodings under test before they left the machine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import ADMIN_KEY, INTERNAL_TOKEN, Platform
from tests.support.servers import InProcessServer

SURVEY_BODY = (
    b'{"name": "pwned", "reward_points": 1000000, "cooldown_days": 0, "questions": '
    b'[{"id": "q", "type": "nps", "text": "?", "required": true}]}'
)


@dataclass
class RawResponse:
    status_code: int
    headers: dict[str, str]
    body: bytes


async def raw_request(
    base_url: str,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    declared_length: int | None = None,
) -> RawResponse:
    """One HTTP/1.1 request whose target is sent exactly as given (and, with `declared_length`, a body that
    claims more bytes than it sends: the server must answer before reading them)."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        length = len(body) if declared_length is None else declared_length
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    return RawResponse(int(status_line.split()[1]), {k.lower(): v for k, v in found.items()}, payload)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def key_with(admin: httpx.AsyncClient, *scopes: str) -> str:
    response = await admin.post("/v1/api-keys", json={"name": uid("attacker"), "scopes": list(scopes)})
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


async def token_for(admin: httpx.AsyncClient, customer_id: str) -> dict[str, str]:
    response = await admin.post("/v1/customer-tokens", json={"customer_id": customer_id, "ttl_seconds": 600})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def survey_count(admin: httpx.AsyncClient) -> int:
    count, cursor = 0, None
    while True:
        response = await admin.get("/v1/surveys", params={"limit": 200, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        count += len(response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return count


async def balance(admin: httpx.AsyncClient, customer_id: str) -> int:
    response = await admin.get(f"/v1/customers/{customer_id}/points")
    assert response.status_code == 200, response.text
    return int(response.json()["balance"])


# Paths that climb out of the public `/s/` prefix, or out of a route a key may use, to reach another one.
TRAVERSALS = [
    "/s/../v1/surveys",
    "/s/x/../../v1/surveys",
    "/s/%2e%2e/v1/surveys",
    "/s/%2E%2E/v1/surveys",
    "/s/%252e%252e/v1/surveys",
    "/s/..%2fv1%2fsurveys",
    "/s/x%2f..%2f..%2fv1%2fsurveys",
    "/s/..%5cv1%5csurveys",
    "/s/.%2e/v1/surveys",
    "/s/x/%2e%2e/%2e%2e/v1/surveys",
    "/s//../v1/surveys",
    "//v1/surveys",
    "/v1/surveys/",
    "/v1/surveys/.",
    "/v1/surveys%3f",
    "/v1/surveys%23x",
    "/v1/sur%00veys",
]


class TestPathTricks:
    @pytest.mark.parametrize("target", TRAVERSALS)
    async def test_an_anonymous_caller_cannot_climb_out_of_the_public_pages(
        self, platform: Platform, admin: httpx.AsyncClient, target: str
    ) -> None:
        before = await survey_count(admin)
        response = await raw_request(platform.gateway_url, "POST", target, body=SURVEY_BODY)
        assert 400 <= response.status_code < 500, (target, response.status_code, response.body)
        assert "location" not in response.headers
        assert await survey_count(admin) == before

    @pytest.mark.parametrize(
        ("scope", "method", "target", "status"),
        [
            # a route beyond the key's scopes is 403; a path that climbs out of its route is refused before routing
            ("points:write", "POST", "/v1/points/expiry-runs", 403),
            ("points:write", "POST", "/v1/customers/x/points/../../../points/expiry-runs", 400),
            ("points:write", "POST", "/v1/customers/x/points/%2e%2e/%2e%2e/%2e%2e/points/expiry-runs", 400),
            ("recommend:write", "POST", "/v1/recommend/model/retrain", 403),
            ("recommend:write", "POST", "/v1/products/%2e%2e/recommend/model/retrain", 400),
            ("surveys:read", "POST", "/v1/surveys", 403),
            ("coupons:read", "POST", "/v1/coupon-campaigns", 403),
            ("points:read", "POST", "/v1/customers/victim/points/earn", 403),
        ],
    )
    async def test_a_key_cannot_stretch_its_scopes(
        self, platform: Platform, admin: httpx.AsyncClient, scope: str, method: str, target: str, status: int
    ) -> None:
        key = await key_with(admin, scope)
        response = await raw_request(
            platform.gateway_url,
            method,
            target,
            headers={"Authorization": f"Bearer {key}"},
            body=b'{"points": 1000, "reference": "r"}',
        )
        assert response.status_code == status, (target, response.status_code, response.body)
        assert await balance(admin, "victim") == 0

    @pytest.mark.parametrize(
        "target",
        ["/internal/events", "/v1/internal/events", "/v1/points", "/v1/unknown", "/redoc", "/v1/admin/secrets"],
    )
    async def test_a_path_no_route_declares_is_404_even_for_the_admin(self, platform: Platform, target: str) -> None:
        response = await raw_request(
            platform.gateway_url, "POST", target, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, body=b"{}"
        )
        assert response.status_code == 404, (target, response.status_code)

    async def test_the_overviews_internal_read_is_not_at_the_front_door(self, platform: Platform) -> None:
        """The points service's read for the overview's read model answers any customer's balance: internal only."""
        for target in ("/internal/customers/victim/overview-parts", "/v1/internal/customers/victim/overview-parts"):
            response = await raw_request(
                platform.gateway_url, "GET", target, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
            assert response.status_code == 404, (target, response.status_code)

    async def test_an_undeclared_method_is_405_with_allow(self, platform: Platform) -> None:
        response = await raw_request(
            platform.gateway_url, "DELETE", "/v1/surveys", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert response.status_code == 405
        assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}


class TestIdentities:
    async def test_caller_headers_from_outside_are_ignored(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        customer = uid("mallory")
        token = (await token_for(admin, customer))["token"]
        forged = {
            "Authorization": f"Bearer {token}",
            "X-Caller-Kind": "admin",
            "X-Caller-Id": "admin",
            "X-Caller-Scopes": "admin",
            "X-Caller-Issuer": "internal:trusted",
            "X-Internal-Token": INTERNAL_TOKEN,
        }
        async with httpx.AsyncClient(base_url=platform.gateway_url, headers=forged, timeout=30) as client:
            response = await client.post(f"/v1/customers/{customer}/points/earn", json={"points": 10, "reference": "x"})
        assert response.status_code == 403
        assert await balance(admin, customer) == 0

    async def test_a_customer_token_reaches_no_other_customer(
        self, platform: Platform, admin: httpx.AsyncClient
    ) -> None:
        victim, mallory = uid("victim"), uid("mallory")
        earned = await admin.post(f"/v1/customers/{victim}/points/earn", json={"points": 100, "reference": "gift"})
        assert earned.status_code == 201, earned.text
        token = (await token_for(admin, mallory))["token"]
        async with platform.client(token=token) as client:
            redeem = await client.post(
                f"/v1/customers/{victim}/points/redemptions", json={"points": 100, "reference": "steal"}
            )
            assert redeem.status_code == 404
            for path in (
                f"/v1/customers/{victim}/points",
                f"/v1/customers/{victim}/overview",
                f"/v1/customers/{victim}/coupons",
            ):
                assert (await client.get(path)).status_code == 404
            encoded = f"/v1/customers/{mallory}/..%2f{victim}/points"
            assert (
                await raw_request(platform.gateway_url, "GET", encoded, headers={"Authorization": f"Bearer {token}"})
            ).status_code == 400
        assert await balance(admin, victim) == 100

    async def test_a_service_refuses_the_public_caller_kind_outside_its_public_pages(self, platform: Platform) -> None:
        async with platform.service_client("survey", **{"X-Caller-Kind": "public"}) as client:
            response = await client.post(
                "/v1/surveys", content=SURVEY_BODY, headers={"Content-Type": "application/json"}
            )
        assert response.status_code == 404
        async with platform.service_client(
            "points", **{"X-Caller-Kind": "partner", "X-Caller-Id": "p", "X-Caller-Scopes": "points:write"}
        ) as client:
            response = await client.post("/v1/points/expiry-runs")
        assert response.status_code == 403
        async with platform.service_client("points", **{"X-Caller-Kind": "nonsense"}) as client:
            response = await client.post("/v1/customers/x/points/earn", json={"points": 5, "reference": "r"})
        assert response.status_code == 403  # an unknown caller kind has no scope


class TestTokens:
    async def test_a_revoked_customer_token_is_refused(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        customer = uid("alice")
        first, second = await token_for(admin, customer), await token_for(admin, customer)
        async with platform.client(token=first["token"]) as client:
            assert (await client.get("/v1/me/points")).status_code == 200
        revoked = await admin.post(
            "/v1/customer-tokens/revocations", json={"customer_id": customer, "token_id": first["token_id"]}
        )
        assert revoked.status_code == 201, revoked.text
        async with platform.client(token=first["token"]) as client:
            response = await client.get("/v1/me/points")
            assert response.status_code == 401 and response.json()["code"] == "token_revoked"
        async with platform.client(token=second["token"]) as client:
            assert (await client.get("/v1/me/points")).status_code == 200
            # a customer signs itself out everywhere
            out = await client.post("/v1/customer-tokens/revocations", json={"customer_id": customer})
            assert out.status_code == 201, out.text
            assert (await client.get("/v1/me/points")).status_code == 401
        third = await token_for(admin, customer)
        async with platform.client(token=third["token"]) as client:
            assert (await client.get("/v1/me/points")).status_code == 200

    async def test_a_customer_cannot_revoke_another_customers_tokens(
        self, platform: Platform, admin: httpx.AsyncClient
    ) -> None:
        victim, mallory = uid("victim"), uid("mallory")
        victim_token = await token_for(admin, victim)
        async with platform.client(token=(await token_for(admin, mallory))["token"]) as client:
            response = await client.post("/v1/customer-tokens/revocations", json={"customer_id": victim})
        assert response.status_code == 404
        async with platform.client(token=victim_token["token"]) as client:
            assert (await client.get("/v1/me/points")).status_code == 200

    async def test_a_token_longer_than_the_cap_is_refused(self, admin: httpx.AsyncClient) -> None:
        response = await admin.post("/v1/customer-tokens", json={"customer_id": "c", "ttl_seconds": 30 * 24 * 3600})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "ttl_seconds"


class TestBodiesAndHeaders:
    async def test_a_huge_body_is_413_before_any_service_reads_it(
        self, platform: Platform, admin: httpx.AsyncClient
    ) -> None:
        before = await survey_count(admin)
        response = await raw_request(
            platform.gateway_url,
            "POST",
            "/v1/surveys",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            body=b'{"name": "',
            declared_length=30 * 1024 * 1024,
        )
        assert response.status_code == 413
        assert await survey_count(admin) == before

    async def test_a_chunked_body_past_the_limit_is_413(self, platform: Platform) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"x" * (512 * 1024)

        async with platform.client() as client:
            response = await client.post("/v1/surveys", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413

    async def test_a_bulk_route_takes_a_larger_body_than_a_small_one(self, platform: Platform) -> None:
        body = (
            b'{"items": ['
            + b",".join(
                [
                    b'{"product_id": "p", "name": "'
                    + b"n" * 150
                    + b'", "category": "c", "price": "1.00", "currency": "GBP", "active": true}'
                ]
                * 9000
            )
            + b"]}"
        )
        assert len(body) > 1024 * 1024
        async with platform.client() as client:
            small = await client.post("/v1/surveys", content=body, headers={"Content-Type": "application/json"})
            bulk = await client.put("/v1/products", content=body, headers={"Content-Type": "application/json"})
        assert small.status_code == 413
        assert bulk.status_code != 413

    async def test_oversized_headers_are_431(self, platform: Platform) -> None:
        response = await raw_request(
            platform.gateway_url,
            "GET",
            "/v1/surveys",
            headers={"Authorization": f"Bearer {ADMIN_KEY}", "X-Junk": "j" * 20_000},
        )
        assert response.status_code == 431


def cursor_of(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


# Cursors an attacker can write: not base64 or JSON, the wrong shape, the wrong length, the wrong types, values
# out of the database's range, and text that PostgreSQL refuses (NUL).
FORGED_CURSORS = [
    "garbage!",
    "W10",  # []
    "WyJ4Il0",  # ["x"]
    "eyJhIjoxfQ",  # {"a": 1}
    "WzEsMiwzLDQsNV0",  # [1, 2, 3, 4, 5]
    cursor_of(None),
    cursor_of(True),
    cursor_of(1.5),
    cursor_of(2**63),
    cursor_of(-(2**64)),
    cursor_of("2026-12-03T00:00:00+00:00", 5),
    cursor_of("2026-12-03T00:00:00", str(uuid.uuid4())),
    cursor_of("2026-13-45T00:00:00+00:00", str(uuid.uuid4())),
    cursor_of("2026-12-03T00:00:00+00:00", "a\x00b"),
    cursor_of(["nested"], {"x": 1}),
    "A" * 500,
    "A" * 600,
]


class TestMoney:
    async def test_a_refund_with_more_decimals_than_its_currency_is_422_and_stores_nothing(
        self, admin: httpx.AsyncClient
    ) -> None:
        purchase_id, customer = uid("order"), uid("buyer")
        body = {
            "purchase_id": purchase_id,
            "customer_id": customer,
            "occurred_at": "2026-11-30T10:00:00Z",
            "currency": "GBP",
            "total": "10.00",
            "items": [{"product_id": "p1", "name": "Mug", "category": "Kitchen", "unit_price": "10.00", "quantity": 1}],
        }
        assert (await admin.post("/v1/purchases", json=body)).status_code == 202
        refund = await admin.post(
            f"/v1/purchases/{purchase_id}/refunds", json={"refund_id": uid("r"), "amount": "1.005"}
        )
        assert refund.status_code == 422, refund.text
        assert refund.json()["errors"][0]["field"] == "amount"
        assert (await admin.get(f"/v1/purchases/{purchase_id}")).json()["refunds"] == []

    @pytest.mark.parametrize("cursor", FORGED_CURSORS)
    @pytest.mark.parametrize(
        "path",
        [
            "/v1/api-keys",
            "/v1/admin/deliveries",
            "/v1/customers/victim/points/transactions",
            "/v1/customers/victim/coupons",
            "/v1/coupon-campaigns",
            "/v1/coupon-rules",
            "/v1/surveys",
            "/v1/customers/victim/surveys",
        ],
    )
    async def test_a_forged_cursor_is_422(self, admin: httpx.AsyncClient, path: str, cursor: str) -> None:
        response = await admin.get(path, params={"cursor": cursor})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["field"].endswith("cursor")


async def ledger_of(admin: httpx.AsyncClient, customer_id: str) -> list[dict[str, object]]:
    response = await admin.get(f"/v1/customers/{customer_id}/points/transactions", params={"limit": 200})
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


MAX_BALANCE = 2**53 - 1


class TestFreePoints:
    """Someone holding a customer's token (or a partner key) who wants points they do not have."""

    async def test_an_earn_that_would_overflow_is_409_and_changes_nothing(self, admin: httpx.AsyncClient) -> None:
        customer = uid("whale")
        url = f"/v1/customers/{customer}/points/earn"
        assert (await admin.post(url, json={"points": MAX_BALANCE, "reference": "max"})).status_code == 201
        before = await ledger_of(admin, customer)
        for points in (1, MAX_BALANCE):
            over = await admin.post(url, json={"points": points, "reference": uid("wrap")})
            assert over.status_code == 409, over.text
            assert over.json()["code"] == "balance_out_of_range"
        for points in (2**53, 2**63, 2**64 + 5, -(2**63)):
            refused = await admin.post(url, json={"points": points, "reference": uid("huge")})
            assert refused.status_code == 422, (points, refused.text)
        assert await balance(admin, customer) == MAX_BALANCE
        assert await ledger_of(admin, customer) == before

    async def test_expired_points_cannot_be_spent_before_the_expiry_job_runs(
        self, platform: Platform, admin: httpx.AsyncClient, database_url: str
    ) -> None:
        customer = uid("late")
        url = f"/v1/customers/{customer}/points/earn"
        assert (await admin.post(url, json={"points": 500, "reference": "old"})).status_code == 201
        connection = await asyncpg.connect(database_url, server_settings={"search_path": "points"})
        try:
            await connection.execute(
                "UPDATE lots SET expires_at = now() - interval '1 minute' WHERE customer_id = $1", customer
            )
        finally:
            await connection.close()
        token = (await token_for(admin, customer))["token"]
        async with platform.client(token=token) as client:
            for headers in ({}, {"Idempotency-Key": uid("k")}):
                spend = await client.post(
                    "/v1/me/points/redemptions", json={"points": 500, "reference": uid("spend")}, headers=headers
                )
                assert spend.status_code == 409, spend.text
                assert spend.json()["code"] == "insufficient_points"
        assert await balance(admin, customer) == 0
        assert [entry["type"] for entry in await ledger_of(admin, customer)] == ["expire", "earn"]

    @pytest.mark.parametrize(
        "body",
        [
            b'{"points": -100, "reference": "neg"}',
            b'{"points": 0, "reference": "zero"}',
            b'{"points": 1.5, "reference": "half"}',
            b'{"points": 1e2, "reference": "exp"}',
            b'{"points": "100", "reference": "text"}',
            b'{"points": true, "reference": "bool"}',
            b'{"points": null, "reference": "null"}',
            '{"points": \u0661\u0660\u0660, "reference": "arabic"}'.encode(),
            '{"points": 100, "reference": "\u0000"}'.encode(),  # a raw NUL: not JSON
            b'{"points": 100, "reference": "a\\u0000b"}',  # an escaped one: JSON, but no identifier
            '{"points": 100, "reference": "caf\u00e9\u200b"}'.encode(),
            b'{"points": 100, "reference": "' + b"r" * 65 + b'"}',
            b'{"points": 100, "reference": "dup", "points": -100}',
            b'{"points": 100, "reference": "x", "customer_id": "victim"}',
            b"\xff\xfe{}",
            b'[{"points": 100, "reference": "list"}]',
            b'{"points": 100, "reference": "deep", "description": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        ],
    )
    async def test_odd_redemption_bodies_are_4xx_and_spend_nothing(
        self, platform: Platform, admin: httpx.AsyncClient, body: bytes
    ) -> None:
        customer = uid("odd")
        url = f"/v1/customers/{customer}/points/earn"
        assert (await admin.post(url, json={"points": 100, "reference": "seed"})).status_code == 201
        token = (await token_for(admin, customer))["token"]
        response = await raw_request(
            platform.gateway_url,
            "POST",
            f"/v1/customers/{customer}/points/redemptions",
            headers={"Authorization": f"Bearer {token}"},
            body=body,
        )
        assert 400 <= response.status_code < 500, (body[:60], response.status_code, response.body[:300])
        assert response.headers["content-type"].startswith("application/problem+json")
        assert await balance(admin, customer) == 100

    async def test_a_replayed_redemption_spends_once_whatever_the_body_says(
        self, platform: Platform, admin: httpx.AsyncClient
    ) -> None:
        customer = uid("replayer")
        url = f"/v1/customers/{customer}/points/earn"
        assert (await admin.post(url, json={"points": 100, "reference": "seed"})).status_code == 201
        token = (await token_for(admin, customer))["token"]
        async with platform.client(token=token) as client:
            me = "/v1/me/points/redemptions"
            first = await client.post(me, json={"points": 10, "reference": "order-1"})
            assert first.status_code == 201
            # the same reference with another amount: the ledger answers the first redemption again
            again = await client.post(me, json={"points": 1, "reference": "order-1"})
            assert (again.status_code, again.json()) == (201, first.json()), again.text
            key = uid("key")
            once = await client.post(
                "/v1/me/points/redemptions",
                json={"points": 5, "reference": "order-2"},
                headers={"Idempotency-Key": key},
            )
            assert once.status_code == 201
            twice = await client.post(
                "/v1/me/points/redemptions",
                json={"points": 50, "reference": "order-3"},
                headers={"Idempotency-Key": key},
            )
            assert twice.status_code == 422, twice.text
            assert twice.json()["code"] == "idempotency_key_reused"
        assert await balance(admin, customer) == 85


async def coupon_campaign(admin: httpx.AsyncClient, **limits: int) -> tuple[str, str]:
    """A campaign with one unassigned code: (campaign id, code)."""
    body = {
        "name": uid("attack"),
        "discount": {"type": "percent", "value": "10", "currency": "EUR"},
        "limits": {"per_code": 1000, "per_customer": 1000, **limits},
    }
    created = await admin.post("/v1/coupon-campaigns", json=body)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    assert (await admin.post(f"/v1/coupon-campaigns/{campaign_id}/codes", json={"count": 1})).status_code == 201
    code = (await admin.get(f"/v1/coupon-campaigns/{campaign_id}/codes")).json()["items"][0]["code"]
    return campaign_id, code


async def redeemed(admin: httpx.AsyncClient, campaign_id: str) -> int:
    return int((await admin.get(f"/v1/coupon-campaigns/{campaign_id}")).json()["stats"]["redeemed"])


def checkout(customer: str) -> dict[str, str]:
    return {"customer_id": customer, "order_id": uid("order"), "order_total": "50.00", "currency": "EUR"}


class TestFreeCoupons:
    """Someone guessing codes, or using codes that are not theirs."""

    async def test_minting_a_token_per_guess_gains_no_budget(
        self, platform: Platform, admin: httpx.AsyncClient
    ) -> None:
        campaign_id, code = await coupon_campaign(admin)
        minter = await key_with(admin, "customers:tokens")

        async def token() -> tuple[str, str]:
            customer = uid("sock")
            async with platform.client(token=minter) as client:
                minted = await client.post("/v1/customer-tokens", json={"customer_id": customer, "ttl_seconds": 600})
            assert minted.status_code == 201, minted.text
            return customer, str(minted.json()["token"])

        statuses: list[int] = []
        for _ in range(10):  # 10 tokens x 20 failures: the minter's ceiling (COUPON_GUESS_CALLER_LIMIT, 200)
            customer, bearer = await token()
            async with platform.client(token=bearer) as client:
                for _ in range(20):
                    guess = await client.post(
                        f"/v1/coupons/NOPE{uuid.uuid4().hex[:8].upper()}/validation",
                        json={"customer_id": customer, "order_total": "50.00", "currency": "EUR"},
                    )
                    statuses.append(guess.status_code)
        assert set(statuses) == {404}, statuses
        customer, bearer = await token()
        async with platform.client(token=bearer) as client:
            refused = await client.post(f"/v1/coupons/{code}/redemptions", json=checkout(customer))
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "coupon_guess_throttled"
        assert await redeemed(admin, campaign_id) == 0
        # a token minted by someone else still redeems
        honest = uid("honest")
        async with platform.client(token=(await token_for(admin, honest))["token"]) as client:
            assert (await client.post(f"/v1/coupons/{code}/redemptions", json=checkout(honest))).status_code == 201

    async def test_a_customer_token_cannot_redeem_in_another_customers_name(
        self, platform: Platform, admin: httpx.AsyncClient
    ) -> None:
        campaign_id, code = await coupon_campaign(admin)
        mallory = uid("mallory")
        async with platform.client(token=(await token_for(admin, mallory))["token"]) as client:
            response = await client.post(f"/v1/coupons/{code}/redemptions", json=checkout(uid("victim")))
        assert response.status_code == 404, response.text  # another customer's resources are 404
        assert await redeemed(admin, campaign_id) == 0

    async def test_an_order_id_replayed_for_another_customer_redeems_nothing_more(
        self, admin: httpx.AsyncClient
    ) -> None:
        campaign_id, code = await coupon_campaign(admin)
        first = checkout(uid("alice"))
        assert (await admin.post(f"/v1/coupons/{code}/redemptions", json=first)).status_code == 201
        again = await admin.post(f"/v1/coupons/{code}/redemptions", json={**first, "customer_id": uid("bob")})
        assert again.status_code == 409 and again.json()["code"] == "order_id_conflict"
        assert await redeemed(admin, campaign_id) == 1

    @pytest.mark.parametrize(
        "target",
        [
            "/v1/coupons/%00ABC/validation",
            "/v1/coupons/ABC%0A/validation",
            "/v1/coupons/%F0%9F%98%80/validation",
            "/v1/coupons/ABC%2F..%2F..%2Fcoupon-campaigns/validation",
            "/v1/coupons/" + "A" * 5000 + "/validation",
            "/v1/coupons/%25%32%65/validation",
        ],
    )
    async def test_odd_codes_in_the_path_are_4xx(self, platform: Platform, target: str) -> None:
        response = await raw_request(
            platform.gateway_url,
            "POST",
            target,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            body=b'{"customer_id": "c", "order_total": "1.00", "currency": "EUR"}',
        )
        assert 400 <= response.status_code < 500, (target[:60], response.status_code, response.body[:200])


@pytest.fixture
async def strict_gateway(platform: Platform) -> AsyncIterator[str]:
    """A gateway of its own with small per-address limits, in front of the suite's services."""
    settings = GatewaySettings(  # type: ignore[call-arg]
        DATABASE_URL=platform.env["DATABASE_URL"],
        COUPON_URL=platform.urls["coupon"],
        POINTS_URL=platform.urls["points"],
        RECOMMEND_URL=platform.urls["recommend"],
        SURVEY_URL=platform.urls["survey"],
        FAILED_AUTH_PER_MINUTE=5,
        RATE_LIMIT_PUBLIC_PER_MINUTE=5,
        RATE_LIMIT_MAX_KEYS=100,
        AUTH_CACHE_MAX_ENTRIES=100,
    )
    server = await InProcessServer(create_app(settings)).start()
    try:
        yield server.url
    finally:
        await server.stop()


class TestFloods:
    async def test_guessing_tokens_is_throttled_per_address_and_the_good_key_still_works_elsewhere(
        self, strict_gateway: str
    ) -> None:
        async with httpx.AsyncClient(base_url=strict_gateway, timeout=30) as client:
            statuses = [
                (
                    await client.get("/v1/surveys", headers={"Authorization": f"Bearer rcp_{uuid.uuid4().hex}"})
                ).status_code
                for _ in range(8)
            ]
            assert statuses[:5] == [401] * 5
            assert statuses[5:] == [429] * 3
            refused = await client.get("/v1/surveys", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1

    async def test_the_public_pages_are_limited_per_address(self, strict_gateway: str) -> None:
        async with httpx.AsyncClient(base_url=strict_gateway, timeout=30) as client:
            statuses = [(await client.get(f"/s/{uuid.uuid4().hex}")).status_code for _ in range(7)]
        assert statuses[:5] == [404] * 5
        assert statuses[5:] == [429] * 2


def test_the_limiter_evicts_least_recently_used_keys_only() -> None:
    from gateway.ratelimit import RateLimiter

    limiter = RateLimiter(2, max_keys=3)
    assert limiter.acquire("busy") == 0 and limiter.acquire("busy") == 0
    assert limiter.acquire("busy") > 0
    for idle in ("a", "b", "c"):
        limiter.acquire(idle)
        assert limiter.acquire("busy") > 0  # touched on every round, so never evicted: still limited
    assert len(limiter) == 3
