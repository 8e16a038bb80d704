from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from gateway import console, experiments, openapi
from gateway.api import router
from gateway.experiments_api import router as experiments_router
from gateway.limits import Limits
from gateway.overview import CircuitBreaker, ReadModel, signalled
from gateway.principals import Authenticator
from gateway.proxy import FrontDoor, Upstreams
from gateway.settings import GatewaySettings
from gateway.webhooks.api import router as webhooks_router
from gateway.webhooks.delivery import WebhookDispatcher
from gateway.webhooks.handlers import HANDLERS as WEBHOOK_HANDLERS
from kit.app import PROBLEM_SCHEMA, ServiceSpec, create_service_app
from kit.background import PeriodicJob
from kit.client import InternalClient
from kit.observability import ReadinessCheck

SCHEMA = "gateway"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()  # type: ignore[call-arg]

    async def on_startup(app: FastAPI) -> None:
        app.state.authenticator = Authenticator(
            admin_key=settings.admin_key,
            jwt_secret=settings.jwt_secret,
            database=app.state.database,
            cache_seconds=settings.api_key_cache_seconds,
            revocation_cache_seconds=settings.token_revocation_cache_seconds,
            max_entries=settings.auth_cache_max_entries,
            shared=app.state.shared_state,
        )
        app.state.upstreams = Upstreams(
            settings.upstreams,
            timeout=settings.upstream_timeout_seconds,
            bulk_timeout=settings.upstream_bulk_timeout_seconds,
            connect_timeout=settings.upstream_connect_timeout_seconds,
            max_concurrency=settings.upstream_max_concurrency,
            queue_seconds=settings.upstream_queue_seconds,
        )
        app.state.breakers = {name: CircuitBreaker() for name in settings.upstreams}
        app.state.overview = ReadModel(
            app.state.database,
            app.state.upstreams,
            app.state.breakers,
            internal_token=settings.internal_token,
            budget_seconds=settings.overview_budget_ms / 1000,
            max_age_seconds=settings.overview_max_age_seconds,
            refresh_timeout_seconds=settings.upstream_timeout_seconds,
        )
        app.state.clients = {
            name: InternalClient(url, settings.internal_token, timeout=settings.upstream_timeout_seconds)
            for name, url in settings.upstreams.items()
        }
        app.state.webhooks = WebhookDispatcher(
            app.state.database,
            allow_private=settings.webhook_allow_private,
            timeout_seconds=settings.webhook_timeout_seconds,
            per_endpoint=settings.webhook_per_endpoint_concurrency,
            max_in_flight=settings.webhook_max_in_flight,
            poll_seconds=settings.webhook_poll_seconds,
            retry_window=timedelta(hours=settings.webhook_retry_hours),
            backoff_base_seconds=settings.webhook_backoff_base_seconds,
            backoff_max_seconds=settings.webhook_backoff_max_seconds,
            disable_after=timedelta(hours=settings.webhook_disable_after_hours),
        )

    def jobs(app: FastAPI) -> list[PeriodicJob]:
        return [
            PeriodicJob("webhooks.dispatcher", 1.0, app.state.webhooks.run),
            PeriodicJob("overview.refresh", settings.overview_refresh_seconds, app.state.overview.refresh),
            PeriodicJob("overview.watch", 1.0, app.state.overview.watch),
        ]

    async def on_shutdown(app: FastAPI) -> None:
        await app.state.webhooks.aclose()
        await app.state.upstreams.aclose()
        for client in app.state.clients.values():
            await client.aclose()

    def readiness(app: FastAPI) -> dict[str, ReadinessCheck]:
        def upstream_alive(name: str) -> ReadinessCheck:
            async def check() -> None:
                response = await app.state.clients[name].get("/healthz", timeout=1.0)
                response.raise_for_status()

            return check

        return {name: upstream_alive(name) for name in settings.upstreams}

    spec = ServiceSpec(
        name="gateway",
        title="Reciprocity",
        schema=SCHEMA,
        routers=[router, webhooks_router, experiments_router],
        migrations_dir=MIGRATIONS_DIR,
        description="Customer loyalty: coupons, points, recommendations and surveys behind one API.",
        require_internal_token=False,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        front_door=lambda app, inner: FrontDoor(inner, fastapi_app=app),
        readiness=readiness,
        outbox_consumers=settings.upstreams,
        # events from the services' outboxes (`POST /internal/events`, with the internal token only)
        # (the webhook events also keep the customer overview's read model: gateway/overview.py)
        event_handlers=signalled({**WEBHOOK_HANDLERS, **experiments.handlers()}),
        jobs=jobs,
    )
    app = create_service_app(spec, settings)
    app.state.limits = Limits(settings, app.state.shared_state)
    _serve_merged_openapi(app)
    console.install(app)
    return app


def _serve_merged_openapi(app: FastAPI) -> None:
    merged: dict[str, Any] = {}

    async def merged_openapi() -> JSONResponse:
        if not merged:
            own = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            own.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            documents = await openapi.fetch_service_documents(app.state.clients)
            document = openapi.merge(own, documents)
            if len(documents) < len(app.state.clients):
                return JSONResponse(document, headers={"Cache-Control": "no-store"})
            merged.update(document)
        return JSONResponse(merged)

    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/openapi.json"]
    app.add_api_route("/openapi.json", merged_openapi, include_in_schema=False)
