"""Session fixtures: one fresh PostgreSQL database, a real SMTP server, and the whole platform (four
services and the gateway) served over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.database import create_database, drop_database, server_url
from tests.support.mail import Mailbox
from tests.support.servers import InProcessServer, free_port

SERVICES = ("coupon", "points", "recommend", "survey")
INTERNAL_TOKEN = "test-internal-token-0123456789"
ADMIN_KEY = "test-admin-key-0123456789abcdef"
JWT_SECRET = "test-jwt-secret-0123456789abcdef"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


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


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    base = await asyncio.to_thread(server_url)
    url, name = await create_database(base)
    yield url
    await drop_database(base, name)


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def platform_env(database_url: str, mailbox: Mailbox) -> dict[str, str]:
    ports = {name: free_port() for name in (*SERVICES, "gateway")}
    env = {
        "DATABASE_URL": database_url,
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
async def platform(platform_env: dict[str, str]) -> AsyncIterator[Platform]:
    from gateway.app import create_app as gateway_app

    # RECIPROCITY_TEST_SERVICES=points,coupon serves only those (the gateway answers 503 for the rest).
    wanted = [n for n in os.environ.get("RECIPROCITY_TEST_SERVICES", ",".join(SERVICES)).split(",") if n]
    servers = {
        name: InProcessServer(
            importlib.import_module(f"{name}.app").create_app(), port=int(platform_env[f"{name.upper()}_PORT"])
        )
        for name in wanted
    }
    await asyncio.gather(*(server.start() for server in servers.values()))
    servers["gateway"] = await InProcessServer(gateway_app(), port=int(platform_env["GATEWAY_PORT"])).start()
    urls = {name: server.url for name, server in servers.items()}
    yield Platform(env=platform_env, urls=urls, servers=servers)
    await asyncio.gather(*(server.stop() for server in servers.values()), return_exceptions=True)


@pytest.fixture
async def admin(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with platform.client() as client:
        yield client
