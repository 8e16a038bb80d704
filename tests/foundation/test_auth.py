"""Authentication and authorisation at the gateway: admin key, partner API keys with scopes, customer JWTs."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import jwt

from gateway import customer_token_repository, customer_tokens
from tests.conftest import JWT_SECRET, Platform, RolledBack


async def create_key(admin: httpx.AsyncClient, *scopes: str) -> dict:
    response = await admin.post("/v1/api-keys", json={"name": f"partner-{uuid4().hex[:6]}", "scopes": list(scopes)})
    assert response.status_code == 201, response.text
    return response.json()


async def customer_token(admin: httpx.AsyncClient, customer_id: str) -> str:
    response = await admin.post("/v1/customer-tokens", json={"customer_id": customer_id, "ttl_seconds": 600})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


class TestMissingOrBadTokens:
    async def test_no_token_is_401(self, platform: Platform) -> None:
        async with platform.client(token=None) as client:
            response = await client.get("/v1/customers/c1/points")
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_unknown_token_is_401(self, platform: Platform) -> None:
        async with platform.client(token="not-a-real-token") as client:
            assert_problem(await client.get("/v1/customers/c1/points"), 401, "unauthorized")

    async def test_unknown_api_key_is_401(self, platform: Platform) -> None:
        async with platform.client(token="rcp_" + "x" * 43) as client:
            assert_problem(await client.get("/v1/customers/c1/points"), 401, "unauthorized")

    async def test_expired_customer_token_is_401(self, platform: Platform) -> None:
        past = datetime.now(UTC) - timedelta(minutes=5)
        token = jwt.encode({"sub": "c1", "exp": past, "iat": past, "jti": "0" * 32}, JWT_SECRET, algorithm="HS256")
        async with platform.client(token=token) as client:
            assert_problem(await client.get("/v1/me/points"), 401, "token_expired")

    async def test_token_signed_with_another_secret_is_401(self, platform: Platform) -> None:
        future = datetime.now(UTC) + timedelta(minutes=5)
        token = jwt.encode({"sub": "c1", "exp": future}, "another-secret-of-enough-length-32b", algorithm="HS256")
        async with platform.client(token=token) as client:
            assert_problem(await client.get("/v1/me/points"), 401, "unauthorized")

    async def test_revoked_api_key_is_401(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        key = await create_key(admin, "points:read")
        async with platform.client(token=key["key"]) as client:
            assert (await client.get("/v1/customers/c1/points")).status_code == 200
            assert (await admin.delete(f"/v1/api-keys/{key['id']}")).status_code == 204
            assert_problem(await client.get("/v1/customers/c1/points"), 401, "unauthorized")


class TestPartnerScopes:
    async def test_key_is_shown_once_and_stored_hashed(self, admin: httpx.AsyncClient) -> None:
        key = await create_key(admin, "points:read")
        assert key["key"].startswith("rcp_") and len(key["key"]) > 40
        listed = (await admin.get("/v1/api-keys", params={"limit": 200})).json()["items"]
        assert all("key" not in item for item in listed)

    async def test_missing_scope_is_403(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        key = await create_key(admin, "points:read")
        async with platform.client(token=key["key"]) as client:
            response = await client.post("/v1/customers/c1/points/earn", json={"points": 5, "reference": "r1"})
            assert_problem(response, 403, "missing_scope")
            assert response.json()["required_scope"] == "points:write"
            assert_problem(await client.get("/v1/api-keys"), 403, "missing_scope")

    async def test_scope_grants_access(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        key = await create_key(admin, "points:read", "points:write")
        customer = f"c-{uuid4().hex[:8]}"
        async with platform.client(token=key["key"]) as client:
            earned = await client.post(f"/v1/customers/{customer}/points/earn", json={"points": 5, "reference": "r1"})
            assert earned.status_code == 201, earned.text
            assert (await client.get(f"/v1/customers/{customer}/points")).json()["balance"] == 5

    async def test_unknown_scope_is_refused(self, admin: httpx.AsyncClient) -> None:
        response = await admin.post("/v1/api-keys", json={"name": "x", "scopes": ["points:read", "root"]})
        assert_problem(response, 422, "validation_error")
        assert response.json()["errors"][0]["field"].startswith("scopes")


class TestCustomerTokens:
    async def test_own_resources_are_reachable(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        customer = f"c-{uuid4().hex[:8]}"
        token = await customer_token(admin, customer)
        async with platform.client(token=token) as client:
            own = await client.get(f"/v1/customers/{customer}/points")
            assert own.status_code == 200, own.text
            assert own.json()["customer_id"] == customer
            me = await client.get("/v1/me/points")
            assert me.status_code == 200 and me.json()["customer_id"] == customer

    async def test_another_customers_resources_are_404(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        token = await customer_token(admin, f"c-{uuid4().hex[:8]}")
        async with platform.client(token=token) as client:
            assert_problem(await client.get("/v1/customers/someone-else/points"), 404, "not_found")
            assert_problem(await client.get("/v1/customers/someone-else/coupons"), 404, "not_found")

    async def test_other_routes_are_403(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        customer = f"c-{uuid4().hex[:8]}"
        token = await customer_token(admin, customer)
        async with platform.client(token=token) as client:
            assert_problem(await client.get("/v1/coupon-campaigns"), 403, "forbidden")
            assert_problem(await client.get("/v1/api-keys"), 403, "forbidden")
            # a customer may not grant itself points
            response = await client.post(f"/v1/customers/{customer}/points/earn", json={"points": 5, "reference": "x"})
            assert_problem(response, 403, "forbidden")

    async def test_minting_needs_the_customers_tokens_scope(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        key = await create_key(admin, "points:read")
        async with platform.client(token=key["key"]) as client:
            response = await client.post("/v1/customer-tokens", json={"customer_id": "c1"})
            assert_problem(response, 403, "missing_scope")
        minter = await create_key(admin, "customers:tokens")
        async with platform.client(token=minter["key"]) as client:
            response = await client.post("/v1/customer-tokens", json={"customer_id": "c1", "ttl_seconds": 120})
        assert response.status_code == 201
        claims = jwt.decode(response.json()["token"], JWT_SECRET, algorithms=["HS256"])
        assert claims["sub"] == "c1"

    async def test_bad_customer_id_is_422(self, admin: httpx.AsyncClient) -> None:
        response = await admin.post("/v1/customer-tokens", json={"customer_id": "has spaces!"})
        assert_problem(response, 422, "validation_error")


class TestServicesNeedTheInternalToken:
    async def test_direct_call_without_token_is_401(self, platform: Platform) -> None:
        for name in ("coupon", "points", "recommend", "survey"):
            if name not in platform.urls:
                continue
            async with httpx.AsyncClient(base_url=platform.urls[name]) as client:
                response = await client.get("/v1/customers/c1/points")
                assert_problem(response, 401, "internal_token_required")
                wrong = await client.get("/v1/customers/c1/points", headers={"X-Internal-Token": "guess"})
                assert_problem(wrong, 401, "internal_token_required")


async def test_revocations_of_expired_tokens_are_forgotten(rolled_back: RolledBack) -> None:
    """A revoked token past its own expiry is refused for its age: its revocation need not be kept for ever."""
    session = await rolled_back("gateway")
    now = datetime.now(UTC)
    expired, live = f"t-{uuid4().hex}", f"t-{uuid4().hex}"
    await customer_token_repository.list_revoked(session, "c-expired", expired, now - timedelta(minutes=1))
    await customer_token_repository.list_revoked(session, "c-live", live, now + timedelta(hours=1))
    assert await customer_tokens.forget_expired_revocations(session) >= 1
    assert not (await customer_token_repository.revocation_state(session, "c-expired", expired)).listed
    assert (await customer_token_repository.revocation_state(session, "c-live", live)).listed
