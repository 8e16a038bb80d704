"""Fixtures for the partner-facing contract: the merged OpenAPI document as the gateway serves it."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SERVICES, Platform
from tests.support.database import create_database, drop_database, server_url
from tests.support.servers import InProcessServer, free_port


@pytest.fixture(scope="session")
async def merged_openapi(platform: Platform, artifacts: Path) -> dict[str, Any]:
    """The gateway's /openapi.json, also saved as test-artifacts/openapi.json for a look by hand."""
    async with platform.client(None) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    (artifacts / "openapi.json").write_text(json.dumps(document, indent=2, sort_keys=True))
    return document


@pytest.fixture(scope="session")
def merged_openapi_path(merged_openapi: dict[str, Any], artifacts: Path) -> Path:
    return artifacts / "openapi.json"


@asynccontextmanager
async def isolated_platform(platform_env: dict[str, str]) -> AsyncIterator[Platform]:
    """A platform of its own on a fresh database, for tests that change platform-wide settings (earning rules,
    tiers, surprise rules, the product catalogue) which the rest of the session must not see."""
    from gateway.app import create_app as gateway_app

    base = await asyncio.to_thread(server_url)
    database_url, name = await create_database(base)
    ports = {service: free_port() for service in (*SERVICES, "gateway")}
    env = {
        **platform_env,
        "DATABASE_URL": database_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['gateway']}",
        "GATEWAY_PORT": str(ports["gateway"]),
        "GATEWAY_URL": f"http://127.0.0.1:{ports['gateway']}",
        # A second platform on the session's PostgreSQL server: small pools keep both under its connection limit.
        "DB_POOL_SIZE": "3",
    }
    for service in SERVICES:
        env[f"{service.upper()}_PORT"] = str(ports[service])
        env[f"{service.upper()}_URL"] = f"http://127.0.0.1:{ports[service]}"
    wanted = [n for n in os.environ.get("RECIPROCITY_TEST_SERVICES", ",".join(SERVICES)).split(",") if n]
    # Settings are read from the environment when an app is created: point them at this platform meanwhile.
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        apps = {service: importlib.import_module(f"{service}.app").create_app() for service in wanted}
        front = gateway_app()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    servers = {service: InProcessServer(app, port=ports[service]) for service, app in apps.items()}
    try:
        await asyncio.gather(*(server.start() for server in servers.values()))
        servers["gateway"] = await InProcessServer(front, port=ports["gateway"]).start()
        yield Platform(env=env, urls={n: s.url for n, s in servers.items()}, servers=servers)
    finally:
        await asyncio.gather(*(server.stop() for server in servers.values()), return_exceptions=True)
        await drop_database(base, name)
