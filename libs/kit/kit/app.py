"""The app factory: every process is wired the same way in a few lines.

app = create_service_app(
    ServiceSpec(name="points", schema="points", routers=[router], migrations_dir=MIGRATIONS),
    settings,
)
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp

from kit import idempotency
from kit.auth import InternalTokenMiddleware
from kit.background import PeriodicJob, run_periodically, stop_tasks
from kit.client import Upstreams
from kit.db import Database
from kit.errors import install_error_handlers
from kit.events import EventHandler, OutboxRelay, events_router
from kit.json import ORJSONResponse
from kit.logging import configure_logging
from kit.migrations import upgrade
from kit.observability import ReadinessCheck, RequestContextMiddleware, health_router
from kit.settings import ServiceSettings
from kit.shared_state import SharedState
from kit.state import DATABASE, SETTINGS, SHARED_STATE, UPSTREAMS, AppState

__all__ = ["PROBLEM_SCHEMA", "ServiceSpec", "create_service_app"]

log = structlog.get_logger("kit.app")

OUTBOX_RELAY: AppState[OutboxRelay] = AppState("outbox_relay")
BACKGROUND_TASKS: AppState[list[asyncio.Task[None]]] = AppState("background_tasks")

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable snake_case error code."},
        "request_id": {"type": "string", "description": "The X-Request-ID of the request, for support."},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

AppHook = Callable[[FastAPI], Awaitable[None]]


@dataclass
class ServiceSpec:
    """What makes one process different from the others."""

    name: str
    schema: str
    routers: Sequence[APIRouter]
    migrations_dir: Path
    title: str | None = None
    version: str = "1.0.0"
    description: str = ""
    event_handlers: Mapping[str, EventHandler] | None = None
    # consumer name -> base URL, for processes that publish events
    outbox_consumers: Mapping[str, str] | None = None
    # Background work shared by the replicas through the database (PROCESS_ROLE worker or all).
    jobs: Callable[[FastAPI], Sequence[PeriodicJob]] = lambda _app: ()
    # Upkeep of state kept in each process that serves requests, such as caches (PROCESS_ROLE api or all).
    api_jobs: Callable[[FastAPI], Sequence[PeriodicJob]] = lambda _app: ()
    readiness: Callable[[FastAPI], Mapping[str, ReadinessCheck]] = lambda _app: {}
    on_startup: AppHook | None = None
    on_shutdown: AppHook | None = None
    require_internal_token: bool = True
    public_prefixes: tuple[str, ...] = ()
    # wraps the whole app just inside the request-id layer, before Starlette's own stack (the gateway's front
    # door: a request it forwards never enters FastAPI's middleware, routing or error layers)
    front_door: Callable[[FastAPI, ASGIApp], ASGIApp] | None = None
    openapi_tags: list[dict[str, Any]] = field(default_factory=list)


def _install_openapi(app: FastAPI, spec: ServiceSpec) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=spec.openapi_tags or None,
            )
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_service_app(spec: ServiceSpec, settings: ServiceSettings) -> FastAPI:
    configure_logging(settings.log_level, settings.log_format, service=spec.name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await asyncio.to_thread(upgrade, spec.migrations_dir, settings.migration_url, spec.schema)
        database = await Database.connect(
            settings.database_url, spec.schema, pool_size=settings.db_pool_size, pooled=settings.behind_pooler
        )
        DATABASE.set(app, database)
        relay: OutboxRelay | None = None
        jobs: list[PeriodicJob] = []
        if settings.runs_background:
            jobs.append(
                PeriodicJob("idempotency.purge", 3600, lambda: _purge_idempotency(database), initial_delay_seconds=60)
            )
        upstreams = UPSTREAMS.get(app) or UPSTREAMS.set(
            app,
            Upstreams(
                spec.outbox_consumers or {},
                timeout=settings.outbox_timeout_seconds,
                connect_timeout=1.0,
                internal_token=settings.internal_token,
            ),
        )
        if spec.outbox_consumers and settings.runs_background:
            relay = OutboxRelay(
                database,
                spec.outbox_consumers,
                settings.internal_token,
                upstreams=upstreams,
                max_attempts=settings.outbox_max_attempts,
                base_delay_seconds=settings.outbox_base_delay_seconds,
                max_delay_seconds=settings.outbox_max_delay_seconds,
                timeout_seconds=settings.outbox_timeout_seconds,
            )
            OUTBOX_RELAY.set(app, relay)
            jobs.append(PeriodicJob("outbox.relay", settings.outbox_poll_seconds, relay.run_until_idle))
        if spec.on_startup:
            await spec.on_startup(app)
        if settings.serves_api:
            # Built once before serving: the gateway fetches it to merge the public document, and on a busy machine
            # building it on that first request took longer than the gateway waits.
            app.openapi()
        await shared_state.start()
        if settings.runs_background:
            jobs.extend(spec.jobs(app))
        if settings.serves_api:
            jobs.extend(spec.api_jobs(app))
        tasks = BACKGROUND_TASKS.set(app, [asyncio.create_task(run_periodically(job), name=job.name) for job in jobs])
        # What start-up made (modules, routes, pools, a loaded model) lives as long as the process: out of the cyclic
        # collector's reach, a full collection walks only what came since. Otherwise every full collection walks
        # ~160,000 objects (recommend: 300+ ms on the loaded 2-core machine, one pause for every request in flight,
        # straight into an open loop's p99). Objects still go when their last reference does.
        gc.freeze()
        log.info(
            "service.started",
            service=spec.name,
            role=database.role,
            process_role=settings.process_role,
            jobs=[job.name for job in jobs],
        )
        try:
            yield
        finally:
            await stop_tasks(tasks)
            if spec.on_shutdown:
                await spec.on_shutdown(app)
            await upstreams.aclose()
            await shared_state.close()
            await database.dispose()

    app = ServiceApp(
        title=spec.title or f"Reciprocity {spec.name}",
        version=spec.version,
        description=spec.description,
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )
    SETTINGS.set(app, settings)
    # Redis when REDIS_URL is set: the process's limits fall back on its own while Redis is away (kit.shared_state)
    shared_state = SharedState(settings.redis_url)
    SHARED_STATE.set(app, shared_state)
    install_error_handlers(app)

    async def database_ready() -> None:
        await DATABASE.of(app).ping()

    checks: dict[str, ReadinessCheck] = {"database": database_ready}
    if settings.serves_api:
        checks.update(spec.readiness(app))
        if shared_state.configured:
            checks["redis"] = shared_state.ready
    mount_routes(app, health_router(checks))
    # A worker serves health and metrics only: its routes would be a second door to the same data.
    if settings.serves_api:
        for router in spec.routers:
            mount_routes(app, router)
        if spec.event_handlers:
            mount_routes(app, events_router(spec.event_handlers))
    if spec.require_internal_token:
        app.add_middleware(InternalTokenMiddleware, token=settings.internal_token, public_prefixes=spec.public_prefixes)
    app.front_door = spec.front_door
    _install_openapi(app, spec)
    return app


def mount_routes(app: FastAPI, router: APIRouter) -> None:
    """The router's routes become the app's own. FastAPI keeps an included router as a branch whose route list it
    walks again on every request to learn whether it changed (a tenth of a redemption's CPU in py-spy); a service's
    routes are fixed once the app is built, and a router's prefix, tags and dependencies are already in them."""
    app.router.routes.extend(router.routes)


class ServiceApp(FastAPI):
    """FastAPI with the kit's layers outermost: the request id, access log and metrics cover every request,
    errors that Starlette's own error layer answers included."""

    front_door: Callable[[FastAPI, ASGIApp], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        if self.front_door is not None:
            app = self.front_door(self, app)
        return RequestContextMiddleware(app)


async def _purge_idempotency(database: Database) -> None:
    async with database.transaction() as session:
        removed = await idempotency.purge_expired(session)
    if removed:
        log.info("idempotency.purged", keys=removed)
