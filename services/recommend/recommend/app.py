from pathlib import Path

import asyncpg
from fastapi import FastAPI

from kit.app import ServiceSpec, create_service_app
from kit.background import PeriodicJob
from kit.db import raw_dsn
from recommend.api import reads, router
from recommend.engine import Engine
from recommend.events import purchase_created
from recommend.settings import RecommendSettings
from recommend.training import Connection

SCHEMA = "recommend"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


async def _reset(_connection: asyncpg.Connection) -> None:
    """The serving pool runs single SELECTs (no locks, listeners, prepared state to undo): skip the reset round trip."""


def create_app(settings: RecommendSettings | None = None) -> FastAPI:
    settings = settings or RecommendSettings()  # type: ignore[call-arg]

    async def start(app: FastAPI) -> None:
        database = app.state.database
        server_settings = {"search_path": SCHEMA, "application_name": "reciprocity-recommend-serving"}
        if database.role:
            server_settings["role"] = database.role
        dsn = raw_dsn(settings.database_url)
        pool = await asyncpg.create_pool(
            dsn,
            min_size=2,
            max_size=settings.serving_pool_size,
            server_settings=server_settings,
            reset=_reset,
        )
        engine = Engine(pool, Connection(dsn, SCHEMA, database.role), subprocess=settings.train_in_subprocess)
        app.state.engine = engine
        # load/train from the database at start; requests are served (popular, then personal) meanwhile
        engine.request_training(int(await pool.fetchval("SELECT nextval('model_version_seq')")))

    async def stop(app: FastAPI) -> None:
        engine: Engine = app.state.engine
        await engine.close()
        await engine.pool.close()

    def jobs(app: FastAPI) -> list[PeriodicJob]:
        engine: Engine = app.state.engine

        async def retrain_if_new() -> None:
            count = int(await engine.pool.fetchval("SELECT count(*) FROM interactions"))
            if count != engine.trained_interactions and not engine.training:
                engine.request_training(int(await engine.pool.fetchval("SELECT nextval('model_version_seq')")))

        return [
            PeriodicJob("recommend.catalog_reload", 60, engine.reload_catalog, initial_delay_seconds=60),
            PeriodicJob(
                "recommend.retrain",
                settings.retrain_interval_seconds,
                retrain_if_new,
                initial_delay_seconds=settings.retrain_interval_seconds,
            ),
        ]

    spec = ServiceSpec(
        name="recommend",
        schema=SCHEMA,
        routers=[router, reads],
        migrations_dir=MIGRATIONS_DIR,
        description="Catalog, purchase history, preferences and personal recommendations.",
        event_handlers={"purchase.created": purchase_created},
        on_startup=start,
        on_shutdown=stop,
        jobs=jobs,
    )
    return create_service_app(spec, settings)
