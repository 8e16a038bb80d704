"""Session fixtures: a migrated template database, the session's database cloned from it, a real SMTP server, and
the whole platform (four services and the gateway) served over real HTTP on loopback.

Isolation (docs/development.md, "Tests"): HTTP tests on the session's platform own their ids (`uuid4().hex`);
a test marked `own_platform` (it changes programme-wide state) gets a platform and a database of its own;
`rolled_back(schema)` gives in-process domain code a session whose transaction is rolled back after the test;
`real_commits` marks the tests whose point is what concurrent commits do, which no rollback may hide."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kit.db import Database
from kit.settings import asyncpg_url
from tests.support.database import MigratedTemplate, create_database, drop_database, server_url
from tests.support.mail import Mailbox
from tests.support.platforms import (
    ADMIN_KEY,
    INTERNAL_TOKEN,
    SERVICES,
    Platform,
    own_platform,
    serve_platform,
    wanted_services,
)
from tests.support.servers import free_port

__all__ = ["ADMIN_KEY", "INTERNAL_TOKEN", "JWT_SECRET", "SERVICES", "Platform"]

JWT_SECRET = "test-jwt-secret-0123456789abcdef"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

RolledBack = Callable[[str], Awaitable[AsyncSession]]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
async def migrated_template() -> AsyncIterator[MigratedTemplate]:
    template = await MigratedTemplate.create(await asyncio.to_thread(server_url))
    yield template
    await template.drop()


@pytest.fixture(scope="session")
async def session_database_url(migrated_template: MigratedTemplate) -> AsyncIterator[str]:
    url, name = await create_database(migrated_template.base_url)
    yield url
    await drop_database(migrated_template.base_url, name)


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def platform_env(session_database_url: str, mailbox: Mailbox) -> dict[str, str]:
    ports = {name: free_port() for name in (*SERVICES, "gateway")}
    env = {
        "DATABASE_URL": session_database_url,
        "LOYALTY_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "LOYALTY_ADMIN_KEY": ADMIN_KEY,
        "LOYALTY_JWT_SECRET": JWT_SECRET,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['gateway']}",
        "GATEWAY_URL": f"http://127.0.0.1:{ports['gateway']}",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mailbox.port),
        "SMTP_FROM": "surveys@reciprocity.test",
        "LOG_LEVEL": "WARNING",
        # the suite calls from one address; tests/security exercises these limits on a gateway of its own
        "FAILED_AUTH_PER_MINUTE": "1000000",
        "RATE_LIMIT_PUBLIC_PER_MINUTE": "1000000",
        "LOG_FORMAT": "console",
        "OUTBOX_POLL_SECONDS": "0.1",
        # webhook receivers in the tests listen on loopback; retries come quickly
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
        "WEBHOOK_POLL_SECONDS": "0.1",
        # several platforms run at once in some tests; keep each process's share of the server modest
        "DB_POOL_SIZE": "5",
        "GATEWAY_PORT": str(ports["gateway"]),
        # training scores the default settings against the baselines but searches nothing: tests stay fast
        # (tests/recommend/test_tuning.py searches on its own)
        "RECOMMEND_TUNING_BUDGET_SECONDS": "0",
        "RECOMMEND_MODEL_POLL_SECONDS": "0.5",
    }
    for name in SERVICES:
        env[f"{name.upper()}_PORT"] = str(ports[name])
        env[f"{name.upper()}_URL"] = f"http://127.0.0.1:{ports[name]}"
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
async def session_platform(platform_env: dict[str, str]) -> AsyncIterator[Platform]:
    """The platform every test shares, unless marked `own_platform`; session-scoped fixtures use this one."""
    async with serve_platform(platform_env, wanted_services()) as platform:
        yield platform


@pytest.fixture
async def platform(
    request: pytest.FixtureRequest, platform_env: dict[str, str], session_platform: Platform
) -> AsyncIterator[Platform]:
    """The session's platform; a platform of the test's own when it is marked `own_platform`
    (`own_platform(services=["points"])` serves only what is named, "gateway" included when the test calls it;
    `own_platform(env={...})` runs it with those settings changed, as a deployment would set them)."""
    marker = request.node.get_closest_marker("own_platform")
    if marker is None:
        yield session_platform
        return
    env = {**platform_env, **marker.kwargs.get("env", {})}
    async with own_platform(env, marker.kwargs.get("services")) as own:
        yield own


@pytest.fixture
def database_url(platform: Platform) -> str:
    """The database of the test's platform (its own under `own_platform`)."""
    return platform.env["DATABASE_URL"]


@pytest.fixture
async def rolled_back(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[RolledBack]:
    """`session = await rolled_back("points")`: a session in a service's schema and role, for calling domain and
    repository code in-process; whatever it writes (commits included: they release savepoints) is rolled back
    after the test, so no other test sees it."""
    if request.node.get_closest_marker("real_commits"):
        pytest.fail("a test marked real_commits asserts what commits do, which a rolled-back session would hide")
    opened: list[tuple[Database, AsyncConnection, AsyncSession]] = []

    async def session(schema: str) -> AsyncSession:
        database = await Database.connect(asyncpg_url(database_url), schema, pool_size=1)
        connection = await database.engine.connect()
        await connection.begin()
        opened.append((database, connection, AsyncSession(bind=connection, join_transaction_mode="create_savepoint")))
        return opened[-1][2]

    yield session
    for database, connection, opened_session in opened:
        await opened_session.close()
        await connection.rollback()
        await connection.close()
        await database.dispose()


@pytest.fixture
async def admin(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with platform.client() as client:
        yield client
