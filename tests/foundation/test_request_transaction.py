"""`kit.db.TransactionalRoute`: the request owns one transaction, begun by its first statement. What it wrote
commits before the response goes out; a refusal rolls it back unless the refusal keeps what was due anyway; a crash
rolls it back; a request that sends nothing (or only a sole statement of its own) takes no pooled connection for a
transaction it would not use; and every connection goes back to the pool."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from kit.db import Database, SessionDep, own_driver_connection, request_driver_connection, service_router
from kit.errors import Conflict, install_error_handlers
from kit.settings import asyncpg_url
from kit.state import DATABASE
from tests.support.servers import InProcessServer

POOL_SIZE = 2

Served = tuple[httpx.AsyncClient, asyncpg.Connection, Database]


def _app(database: Database) -> FastAPI:
    router = service_router()

    @router.get("/nothing")
    async def nothing(session: SessionDep) -> dict[str, int]:
        return {"checked_out": database.engine.pool.checkedout()}  # type: ignore[attr-defined]

    @router.post("/rows/{outcome}/{tag}", status_code=201)
    async def write(outcome: str, tag: str, session: SessionDep) -> dict[str, str]:
        connection = await request_driver_connection(session)
        await connection.execute("INSERT INTO written (tag) VALUES ($1)", tag)
        if outcome == "refused":
            raise Conflict("refused")
        if outcome == "refused-keeping":
            raise Conflict("refused, what was due stays", keep_changes=True)
        if outcome == "crash":
            raise RuntimeError("unexpected")
        return {"tag": tag}

    @router.post("/sole/{tag}", status_code=201)
    async def sole(tag: str, session: SessionDep) -> dict[str, str]:
        async with own_driver_connection(database) as connection:
            await connection.execute("INSERT INTO written (tag) VALUES ($1)", tag)
        return {"tag": tag}

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    DATABASE.set(app, database)
    return app


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[Served]:
    schema = "request_transaction_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.written (tag text PRIMARY KEY)")
    database = Database(asyncpg_url(database_url), schema, pool_size=POOL_SIZE)
    server = await InProcessServer(_app(database)).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            yield client, admin, database
    finally:
        await server.stop()
        await database.dispose()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def _stored(admin: asyncpg.Connection, database: Database, tag: str) -> bool:
    return bool(await admin.fetchval(f"SELECT count(*) FROM {database.schema}.written WHERE tag = $1", tag))


async def test_a_write_commits_before_its_response(served: Served) -> None:
    client, admin, database = served
    response = await client.post("/rows/ok/a")
    assert response.status_code == 201
    assert await _stored(admin, database, "a")  # no wait: committed before the answer went out


async def test_a_refusal_stores_nothing_unless_it_keeps_what_was_due(
    served: Served,
) -> None:
    client, admin, database = served
    refused = await client.post("/rows/refused/b")
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert not await _stored(admin, database, "b")
    kept = await client.post("/rows/refused-keeping/c")
    assert kept.status_code == 409
    assert await _stored(admin, database, "c")


async def test_a_crash_stores_nothing(served: Served) -> None:
    client, admin, database = served
    assert (await client.post("/rows/crash/d")).status_code == 500
    assert not await _stored(admin, database, "d")


async def test_a_request_that_sends_nothing_takes_no_connection(
    served: Served,
) -> None:
    client, _, _ = served
    response = await client.get("/nothing")
    assert response.status_code == 200
    assert response.json() == {"checked_out": 0}


async def test_every_connection_goes_back_to_the_pool(
    served: Served,
) -> None:
    """More requests than the pool has connections, one after another, every kind: a connection kept by any of
    them would leave the later ones waiting for the pool's timeout."""
    client, admin, database = served
    for n in range(3 * POOL_SIZE):
        assert (await client.post(f"/sole/s{n}")).status_code == 201
        assert (await client.post(f"/rows/ok/o{n}")).status_code == 201
        assert (await client.post(f"/rows/refused/r{n}")).status_code == 409
        assert (await client.post(f"/rows/crash/x{n}")).status_code == 500
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await _stored(admin, database, f"s{3 * POOL_SIZE - 1}")
