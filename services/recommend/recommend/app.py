import os
import socket
from pathlib import Path

import asyncpg
from fastapi import FastAPI

from kit.app import ServiceSpec, create_service_app
from kit.background import PeriodicJob
from kit.db import POOLER_ASYNCPG_ARGS, raw_dsn
from kit.state import DATABASE, AppState
from recommend.api import ENGINE, reads, router
from recommend.engine import Engine
from recommend.events import HANDLERS
from recommend.settings import RecommendSettings
from recommend.trainer import Trainer
from recommend.training import Connection

SCHEMA = "recommend"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
POOL: AppState[asyncpg.Pool] = AppState("pool")
TRAINER: AppState[Trainer] = AppState("trainer")


async def _reset(_connection: asyncpg.Connection) -> None:
    """The serving pool runs single SELECTs (no locks, listeners, prepared state to undo): skip the reset round trip."""


def create_app(settings: RecommendSettings | None = None) -> FastAPI:
    settings = settings or RecommendSettings()  # type: ignore[call-arg]

    # The api processes (PROCESS_ROLE api or all) serve the newest stored model from memory and poll for a newer
    # one; the workers (worker or all) train it: at start and on the schedule when the history changed, and for
    # every retrain request recorded through the API.
    async def start(app: FastAPI) -> None:
        database = DATABASE.of(app)
        server_settings = {"application_name": f"reciprocity-recommend-{settings.process_role}"}
        if database.role and not settings.behind_pooler:
            server_settings["role"] = database.role
        pool = await asyncpg.create_pool(
            raw_dsn(settings.database_url),
            min_size=1 if not settings.serves_api else 2,
            max_size=settings.serving_pool_size if settings.serves_api else 2,
            server_settings=server_settings,
            reset=_reset,
            **(POOLER_ASYNCPG_ARGS if settings.behind_pooler else {}),
        )
        POOL.set(app, pool)
        engine: Engine | None = None
        if settings.serves_api:
            engine = Engine(pool)
            ENGINE.set(app, engine)
            # serve the newest stored model at once (popular, then personal, until there is one)
            await engine.load_latest()
        if settings.runs_background:
            # Training reads in one long snapshot with the schema as its search_path, and listens for requests:
            # straight to the database.
            trainer = Trainer(
                pool,
                Connection(raw_dsn(settings.migration_url), SCHEMA, database.role),
                subprocess=settings.train_in_subprocess,
                tuning_budget_seconds=settings.tuning_budget_seconds,
                name=f"{socket.gethostname()}:{settings.port}/{os.getpid()}",
                install=engine.install if engine is not None else None,
            )
            TRAINER.set(app, trainer)
            if engine is not None:
                engine.trainer = trainer
            await trainer.start()

    async def stop(app: FastAPI) -> None:
        trainer = TRAINER.get(app)
        if trainer is not None:
            await trainer.close()
        await POOL.of(app).close()

    def api_jobs(app: FastAPI) -> list[PeriodicJob]:
        engine = ENGINE.of(app)
        return [
            PeriodicJob("recommend.catalog_reload", 60, engine.reload_catalog, initial_delay_seconds=60),
            PeriodicJob(
                "recommend.model_poll",
                settings.model_poll_seconds,
                engine.load_latest,
                initial_delay_seconds=settings.model_poll_seconds,
            ),
        ]

    def jobs(app: FastAPI) -> list[PeriodicJob]:
        trainer = TRAINER.of(app)
        return [
            PeriodicJob(
                "recommend.training_requests",
                settings.model_poll_seconds,
                trainer.poll,
                initial_delay_seconds=settings.model_poll_seconds,
            ),
            PeriodicJob(
                "recommend.retrain",
                settings.retrain_interval_seconds,
                trainer.retrain_if_new,
                initial_delay_seconds=settings.retrain_interval_seconds,
            ),
        ]

    spec = ServiceSpec(
        name="recommend",
        schema=SCHEMA,
        routers=[router, reads],
        migrations_dir=MIGRATIONS_DIR,
        description="Catalog, purchase history, preferences and personal recommendations.",
        event_handlers=HANDLERS,
        on_startup=start,
        on_shutdown=stop,
        jobs=jobs,
        api_jobs=api_jobs,
    )
    return create_service_app(spec, settings)
