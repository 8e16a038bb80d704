import os
import socket
from pathlib import Path

import asyncpg
from fastapi import FastAPI

from kit.app import ServiceSpec, create_service_app
from kit.background import PeriodicJob
from kit.db import POOLER_ASYNCPG_ARGS, raw_dsn
from recommend import repository
from recommend.api import reads, router
from recommend.engine import Engine
from recommend.events import purchase_created, purchase_refunded, survey_detractor, survey_preference
from recommend.settings import RecommendSettings
from recommend.training import Connection

SCHEMA = "recommend"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


async def _reset(_connection: asyncpg.Connection) -> None:
    """The serving pool runs single SELECTs (no locks, listeners, prepared state to undo): skip the reset round trip."""


def create_app(settings: RecommendSettings | None = None) -> FastAPI:
    settings = settings or RecommendSettings()  # type: ignore[call-arg]

    # The model lives in the memory of each process that serves recommendations, so training stays with them
    # (PROCESS_ROLE api or all): a worker of this service runs only the kit's upkeep.
    async def start(app: FastAPI) -> None:
        if not settings.serves_api:
            return
        database = app.state.database
        server_settings = {"application_name": "reciprocity-recommend-serving"}
        if database.role and not settings.behind_pooler:
            server_settings["role"] = database.role
        pool = await asyncpg.create_pool(
            raw_dsn(settings.database_url),
            min_size=2,
            max_size=settings.serving_pool_size,
            server_settings=server_settings,
            reset=_reset,
            **(POOLER_ASYNCPG_ARGS if settings.behind_pooler else {}),
        )
        # Training reads in one long snapshot with the schema as its search_path: straight to the database.
        training = Connection(raw_dsn(settings.migration_url), SCHEMA, database.role)
        engine = Engine(
            pool,
            training,
            subprocess=settings.train_in_subprocess,
            tuning_budget_seconds=settings.tuning_budget_seconds,
            name=f"{socket.gethostname()}:{settings.port}/{os.getpid()}",
        )
        app.state.engine = engine
        # serve the newest stored model at once; train (or wait for the replica that trains) only when the history
        # changed since; requests are served (popular, then personal) meanwhile
        await engine.load_latest()
        if await repository.interaction_count(pool) != engine.trained_interactions:
            engine.request_training(await repository.new_model_version(pool))

    async def stop(app: FastAPI) -> None:
        if not settings.serves_api:
            return
        engine: Engine = app.state.engine
        await engine.close()
        await engine.pool.close()

    def jobs(app: FastAPI) -> list[PeriodicJob]:
        engine: Engine = app.state.engine

        async def retrain_if_new() -> None:
            count = await repository.interaction_count(engine.pool)
            if count != engine.trained_interactions and not engine.training:
                engine.request_training(await repository.new_model_version(engine.pool))

        async def load_newer() -> None:
            await engine.load_latest()

        return [
            PeriodicJob("recommend.catalog_reload", 60, engine.reload_catalog, initial_delay_seconds=60),
            PeriodicJob(
                "recommend.model_poll",
                settings.model_poll_seconds,
                load_newer,
                initial_delay_seconds=settings.model_poll_seconds,
            ),
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
        event_handlers={
            "purchase.created": purchase_created,
            "purchase.refunded": purchase_refunded,
            "survey.detractor": survey_detractor,
            "survey.preference": survey_preference,
        },
        on_startup=start,
        on_shutdown=stop,
        api_jobs=jobs,
    )
    return create_service_app(spec, settings)
