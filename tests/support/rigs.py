"""A points service as a real child process (so a test can kill, hang and restart it) behind an in-process gateway,
on a database of its own so that no other relay delivers on the rig's behalf."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support.database import create_database, drop_database, server_url
from tests.support.servers import ROOT, InProcessServer, ServiceProcess, free_port

if TYPE_CHECKING:
    from tests.conftest import Platform

LOGS = ROOT / "test-artifacts" / "logs"


@dataclass
class PointsRig:
    points: ServiceProcess
    gateway: InProcessServer
    headers: dict[str, str]
    client_timeout: float

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.gateway.url, headers=self.headers, timeout=self.client_timeout)


@asynccontextmanager
async def points_behind_gateway(
    platform: Platform, log_name: str, *, client_timeout: float = 30, **gateway_settings: Any
) -> AsyncIterator[PointsRig]:
    """`gateway_settings` tune the gateway (its relay's timings above all); the other services are not part of the
    rig: nothing listens at their addresses, so their deliveries wait in their own lanes."""
    base = await asyncio.to_thread(server_url)
    database_url, name = await create_database(base)
    env = {**platform.env, "DATABASE_URL": database_url}
    points = ServiceProcess("points", free_port(), env, LOGS / f"{log_name}.log").start()
    gateway: InProcessServer | None = None
    try:
        await points.wait_ready()
        settings = GatewaySettings(  # type: ignore[call-arg]
            DATABASE_URL=database_url,
            POINTS_URL=points.url,
            COUPON_URL=f"http://127.0.0.1:{free_port()}",
            RECOMMEND_URL=f"http://127.0.0.1:{free_port()}",
            SURVEY_URL=f"http://127.0.0.1:{free_port()}",
            **gateway_settings,
        )
        gateway = await InProcessServer(create_app(settings)).start()
        yield PointsRig(points, gateway, dict(platform.client().headers), client_timeout)
    finally:
        if gateway is not None:
            await gateway.stop()
        points.stop()
        await drop_database(base, name)
