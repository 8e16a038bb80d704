from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.pool import QueuePool

from kit.app import ServiceSpec, create_service_app
from kit.background import PeriodicJob
from points import service
from points.api import router
from points.events import HANDLERS
from points.settings import PointsSettings

SCHEMA = "points"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


async def keep_overflow_connections(app: FastAPI) -> None:
    """Work-around for the kit's pool (kit.db.Database: pool_size=N, max_overflow=N): its queue keeps only N idle
    connections, so under more than N concurrent requests every returned overflow connection is closed and the
    next one opened again (TLS attempt, a new server backend, PL/pgSQL functions compiled again). At 64 clients
    that was about one request in twelve and a sixth of the service's CPU. The same cap of 2N connections,
    but kept open once opened."""
    pool: Any = app.state.database.engine.sync_engine.pool
    if isinstance(pool, QueuePool) and pool._max_overflow > 0:
        pool._pool.maxsize = pool.size() + pool._max_overflow


def create_app(settings: PointsSettings | None = None) -> FastAPI:
    settings = settings or PointsSettings()  # type: ignore[call-arg]

    def jobs(app: FastAPI) -> list[PeriodicJob]:
        return [
            PeriodicJob(
                "points.expiry",
                settings.expiry_interval_seconds,
                lambda: service.expire_due(app.state.database),
                initial_delay_seconds=min(60.0, settings.expiry_interval_seconds),
            )
        ]

    spec = ServiceSpec(
        name="points",
        schema=SCHEMA,
        routers=[router],
        migrations_dir=MIGRATIONS_DIR,
        event_handlers=HANDLERS,
        jobs=jobs,
        on_startup=keep_overflow_connections,
        description="The loyalty ledger: earning rules, tiers, lots that expire, redemptions and reversals.",
    )
    return create_service_app(spec, settings)
