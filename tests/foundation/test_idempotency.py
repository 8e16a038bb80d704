"""Idempotency-Key as the contract says, on a route with a real effect (creating an API key)."""

import asyncio
from uuid import uuid4

import httpx
import pytest

from tests.conftest import Platform
from tests.support.pages import every_item


async def keys_named(admin: httpx.AsyncClient, name: str) -> list[dict]:
    return [item for item in await every_item(admin, "/v1/api-keys") if item["name"] == name]


@pytest.mark.real_commits
async def test_twenty_concurrent_sends_make_one_effect(platform: Platform) -> None:
    name = f"idem-{uuid4().hex[:8]}"
    key = uuid4().hex
    body = {"name": name, "scopes": ["points:read"]}
    async with platform.client(limits=httpx.Limits(max_connections=50)) as admin:
        responses = await asyncio.gather(
            *(admin.post("/v1/api-keys", json=body, headers={"Idempotency-Key": key}) for _ in range(20))
        )
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {201, 409}, statuses
        created = [r for r in responses if r.status_code == 201]
        assert len({r.json()["id"] for r in created}) == 1
        for busy in (r for r in responses if r.status_code == 409):
            assert busy.json()["code"] == "idempotency_key_in_use"
            assert busy.headers["retry-after"] == "1"
        assert len(await keys_named(admin, name)) == 1

        # once the first has finished, a retry replays the very same response
        replay = await admin.post("/v1/api-keys", json=body, headers={"Idempotency-Key": key})
        assert replay.status_code == 201
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == created[0].json()
        assert len(await keys_named(admin, name)) == 1


async def test_same_key_with_another_body_is_422(admin: httpx.AsyncClient) -> None:
    key = uuid4().hex
    first = await admin.post(
        "/v1/api-keys", json={"name": "a", "scopes": ["points:read"]}, headers={"Idempotency-Key": key}
    )
    assert first.status_code == 201
    other = await admin.post(
        "/v1/api-keys", json={"name": "b", "scopes": ["points:read"]}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"


async def test_a_failed_request_leaves_nothing_behind(admin: httpx.AsyncClient) -> None:
    key = uuid4().hex
    name = f"retry-{uuid4().hex[:8]}"
    bad = await admin.post("/v1/api-keys", json={"name": name, "scopes": ["nope"]}, headers={"Idempotency-Key": key})
    assert bad.status_code == 422
    good = await admin.post(
        "/v1/api-keys", json={"name": name, "scopes": ["points:read"]}, headers={"Idempotency-Key": key}
    )
    assert good.status_code == 201
    assert "idempotent-replayed" not in good.headers


async def test_keys_are_scoped_to_the_caller(platform: Platform, admin: httpx.AsyncClient) -> None:
    partner = (await admin.post("/v1/api-keys", json={"name": "p", "scopes": ["customers:tokens"]})).json()["key"]
    key = uuid4().hex
    body = {"customer_id": "scoped-customer", "ttl_seconds": 600}
    async with platform.client(token=partner) as client:
        first = await client.post("/v1/customer-tokens", json=body, headers={"Idempotency-Key": key})
    second = await admin.post("/v1/customer-tokens", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in second.headers
