"""The platform served in the test process: the four services and the gateway, uvicorn on the test's event loop,
each on a loopback port, all on one database. The session serves one (`tests/conftest.py`, fixture `platform`);
a test that changes what is programme-wide gets one of its own on a database of its own (`own_platform`)."""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx

from tests.support.database import copies_the_template, create_database, drop_database, server_url
from tests.support.servers import InProcessServer, free_port

SERVICES = ("coupon", "points", "recommend", "survey")
INTERNAL_TOKEN = "test-internal-token-0123456789"
ADMIN_KEY = "test-admin-key-0123456789abcdef"


@dataclass
class Platform:
    env: dict[str, str]
    urls: dict[str, str]
    servers: dict[str, InProcessServer] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return self.urls["gateway"]

    def client(self, token: str | None = ADMIN_KEY, **kwargs: object) -> httpx.AsyncClient:
        """A client of the gateway; the admin key unless another token (or None) is given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.gateway_url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def service_client(self, name: str, **headers: str) -> httpx.AsyncClient:
        """A client straight to one service, with the internal token (as the gateway would call it)."""
        return httpx.AsyncClient(
            base_url=self.urls[name], headers={"X-Internal-Token": INTERNAL_TOKEN, **headers}, timeout=30
        )


def wanted_services() -> list[str]:
    """RECIPROCITY_TEST_SERVICES=points,coupon serves only those (the gateway answers 503 for the rest)."""
    return [n for n in os.environ.get("RECIPROCITY_TEST_SERVICES", ",".join(SERVICES)).split(",") if n]


def addresses(env: dict[str, str]) -> dict[str, str]:
    """`env` with every process on a free loopback port of its own."""
    ports = {name: free_port() for name in (*SERVICES, "gateway")}
    moved = {**env, "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['gateway']}"}
    moved["GATEWAY_URL"] = moved["PUBLIC_BASE_URL"]
    for name, port in ports.items():
        moved[f"{name.upper()}_PORT"] = str(port)
        moved[f"{name.upper()}_URL"] = f"http://127.0.0.1:{port}"
    return moved


@asynccontextmanager
async def serve_platform(env: dict[str, str], services: Sequence[str], gateway: bool = True) -> AsyncIterator[Platform]:
    """Serves `services` (and the gateway unless told not to) with the settings of `env` (its ports included)."""
    from gateway.app import create_app as gateway_app

    # Settings are read from the environment when an app is created: point them at this platform meanwhile.
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        apps = {name: importlib.import_module(f"{name}.app").create_app() for name in services}
        front = gateway_app() if gateway else None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    servers = {name: InProcessServer(app, port=int(env[f"{name.upper()}_PORT"])) for name, app in apps.items()}
    try:
        await asyncio.gather(*(server.start() for server in servers.values()))
        if front is not None:
            servers["gateway"] = await InProcessServer(front, port=int(env["GATEWAY_PORT"])).start()
        yield Platform(env=env, urls={name: server.url for name, server in servers.items()}, servers=servers)
    finally:
        await asyncio.gather(*(server.stop() for server in servers.values()), return_exceptions=True)


@asynccontextmanager
async def own_platform(
    env: dict[str, str], services: Sequence[str] | None = None, *, pool_size: int = 3
) -> AsyncIterator[Platform]:
    """A platform of its own on a database of its own (a copy of the migrated template: nothing to migrate), for a
    test that changes programme-wide state (earning rules, tiers, surprise rules, the post-purchase survey, the
    rewards catalogue, a running lever) which no other test may see, and that nothing may undo.

    `services` names what to serve, "gateway" among them when the test calls it (each one costs start-up time);
    by default every service (as RECIPROCITY_TEST_SERVICES allows) and the gateway."""
    base = await asyncio.to_thread(server_url)
    database_url, name = await create_database(base)
    migrated = copies_the_template(base)  # a copy of the template has nothing to migrate
    # small pools: this platform shares the PostgreSQL server with the session's (and other runs' on this machine)
    own = addresses(
        {
            **env,
            "DATABASE_URL": database_url,
            "MIGRATE_ON_START": str(not migrated).lower(),
            "DB_POOL_SIZE": str(pool_size),
        }
    )
    try:
        if services is None:
            served, gateway = wanted_services(), True
        else:
            served, gateway = [name for name in services if name != "gateway"], "gateway" in services
        async with serve_platform(own, served, gateway) as platform:
            yield platform
    finally:
        await drop_database(base, name)
