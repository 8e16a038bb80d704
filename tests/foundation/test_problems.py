"""Bad input gets a clear RFC 9457 problem and changes nothing; the request id travels to the service and back."""

from uuid import uuid4

import httpx

from kit.db import Database
from tests.conftest import Platform
from tests.support.pages import every_item


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail", "code"} <= body.keys()
    assert body["status"] == status
    return body


async def test_unknown_field_is_422_naming_it(admin: httpx.AsyncClient) -> None:
    body = problem(await admin.post("/v1/api-keys", json={"name": "x", "scopes": ["admin"], "colour": "red"}), 422)
    assert body["code"] == "validation_error"
    assert {"field": "colour", "message": "Unknown field."} in body["errors"]


async def test_malformed_json_is_422(admin: httpx.AsyncClient) -> None:
    response = await admin.post("/v1/api-keys", content=b"{not json", headers={"Content-Type": "application/json"})
    assert problem(response, 422)["code"] == "validation_error"


async def test_missing_and_wrongly_typed_fields_are_listed(admin: httpx.AsyncClient) -> None:
    body = problem(await admin.post("/v1/customer-tokens", json={"ttl_seconds": "soon"}), 422)
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"customer_id", "ttl_seconds"}


async def test_bad_cursor_and_limit_are_422(admin: httpx.AsyncClient) -> None:
    assert problem(await admin.get("/v1/api-keys", params={"cursor": "%%%"}), 422)["errors"][0]["field"] == "cursor"
    assert problem(await admin.get("/v1/api-keys", params={"limit": 0}), 422)["code"] == "validation_error"
    assert problem(await admin.get("/v1/api-keys", params={"limit": 201}), 422)["code"] == "validation_error"


async def test_bad_input_changes_nothing(admin: httpx.AsyncClient) -> None:
    before = await every_item(admin, "/v1/api-keys")
    await admin.post("/v1/api-keys", json={"name": "", "scopes": ["admin"]})
    await admin.post("/v1/api-keys", json={"name": "x", "scopes": []})
    assert await every_item(admin, "/v1/api-keys") == before


async def test_unknown_paths_and_methods(admin: httpx.AsyncClient) -> None:
    assert problem(await admin.get("/v1/no-such-thing"), 404)["code"] == "not_found"
    assert problem(await admin.delete(f"/v1/api-keys/{uuid4()}"), 404)["code"] == "not_found"
    assert problem(await admin.put("/v1/customer-tokens", json={}), 405)["code"] == "method_not_allowed"


async def test_request_id_reaches_the_service_and_comes_back(admin: httpx.AsyncClient) -> None:
    request_id = f"trace-{uuid4().hex}"
    # a path the points service answers itself, with a problem that quotes the request id it saw
    response = await admin.get("/v1/points/no-such-endpoint", headers={"X-Request-ID": request_id})
    body = problem(response, 404)
    assert response.headers["x-request-id"] == request_id
    assert body["request_id"] == request_id


async def test_a_request_id_is_created_when_none_is_sent(admin: httpx.AsyncClient) -> None:
    response = await admin.get("/v1/points/no-such-endpoint")
    generated = response.headers["x-request-id"]
    assert len(generated) == 32
    assert response.json()["request_id"] == generated


async def test_an_unsafe_request_id_is_replaced(admin: httpx.AsyncClient) -> None:
    response = await admin.get("/v1/points/no-such-endpoint", headers={"X-Request-ID": "bad id with spaces"})
    assert response.headers["x-request-id"] != "bad id with spaces"


async def test_an_unreachable_database_is_503_not_500(platform: Platform) -> None:
    """Out of connections or a database that is down: a problem the caller may retry, never a 500."""
    points_app = platform.servers["points"].server.config.app
    healthy: Database = points_app.state.database
    # the same server, but a port where nothing listens: every checkout fails to connect
    broken = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none", "points")
    points_app.state.database = broken
    try:
        async with platform.client() as client:
            response = await client.get("/v1/customers/c1/points")
    finally:
        points_app.state.database = healthy
        await broken.dispose()
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"
    assert response.headers["retry-after"] == "1"


async def test_the_front_door_is_503_when_the_database_is_away_during_authentication(platform: Platform) -> None:
    """The gateway's front door runs outside Starlette's error handling: a key it must look up in a database that
    is down is still a problem the caller may retry (503), not uvicorn's bare 500."""
    authenticator = platform.servers["gateway"].server.config.app.state.authenticator
    healthy: Database = authenticator._database
    broken = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none", "gateway")
    authenticator._database = broken
    try:
        async with platform.client(f"rcp_{uuid4().hex}{uuid4().hex}") as client:  # not in the cache: looked up
            response = await client.get("/v1/customers/c1/points")
    finally:
        authenticator._database = healthy
        await broken.dispose()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "database_unavailable"
