from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from gateway import console, customer_tokens, experiments, openapi
from gateway.api import router
from gateway.experiments_api import router as experiments_router
from gateway.limits import Limits
from gateway.overview import CircuitBreaker, ReadModel, signalled
from gateway.principals import Authenticator
from gateway.proxy import FrontDoor
from gateway.settings import GatewaySettings
from gateway.state import AUTHENTICATOR, BREAKERS, LIMITS, OVERVIEW, UPSTREAMS, WEBHOOKS
from gateway.webhooks.api import router as webhooks_router
from gateway.webhooks.delivery import WebhookDispatcher
from gateway.webhooks.handlers import HANDLERS as WEBHOOK_HANDLERS
from kit.app import PROBLEM_SCHEMA, ServiceSpec, create_service_app
from kit.background import PeriodicJob
from kit.client import UpstreamError, Upstreams
from kit.observability import ReadinessCheck
from kit.state import DATABASE, SHARED_STATE

SCHEMA = "gateway"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()  # type: ignore[call-arg]

    async def on_startup(app: FastAPI) -> None:
        authenticator = Authenticator(
            admin_key=settings.admin_key,
            jwt_secret=settings.jwt_secret,
            database=DATABASE.of(app),
            cache_seconds=settings.api_key_cache_seconds,
            revocation_cache_seconds=settings.token_revocation_cache_seconds,
            max_entries=settings.auth_cache_max_entries,
            shared=SHARED_STATE.of(app),
        )
        AUTHENTICATOR.set(app, authenticator)
        breakers = BREAKERS.set(app, {name: CircuitBreaker() for name in settings.upstreams})
        overview = ReadModel(
            DATABASE.of(app),
            UPSTREAMS.of(app),
            breakers,
            internal_token=settings.internal_token,
            budget_seconds=settings.overview_budget_ms / 1000,
            max_age_seconds=settings.overview_max_age_seconds,
            refresh_timeout_seconds=settings.upstream_timeout_seconds,
        )
        OVERVIEW.set(app, overview)
        dispatcher = WebhookDispatcher(
            DATABASE.of(app),
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
        WEBHOOKS.set(app, dispatcher)

    def jobs(app: FastAPI) -> list[PeriodicJob]:
        overview = OVERVIEW.of(app)

        async def forget_expired() -> None:
            async with DATABASE.of(app).transaction() as session:
                await customer_tokens.forget_expired_revocations(session)

        return [
            PeriodicJob("webhooks.dispatcher", 1.0, WEBHOOKS.of(app).run),
            PeriodicJob("overview.refresh", settings.overview_refresh_seconds, overview.refresh),
            PeriodicJob("overview.watch", 1.0, overview.watch),
            PeriodicJob("customer_tokens.forget_expired", 3600.0, forget_expired, initial_delay_seconds=60.0),
        ]

    async def on_shutdown(app: FastAPI) -> None:
        await WEBHOOKS.of(app).aclose()

    def readiness(app: FastAPI) -> dict[str, ReadinessCheck]:
        def upstream_alive(name: str) -> ReadinessCheck:
            async def check() -> None:
                response = await UPSTREAMS.of(app).call(name, "GET", "/healthz", timeout=1.0)
                if response.status != 200:
                    raise UpstreamError(f"{name}: HTTP {response.status}")

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
    LIMITS.set(app, Limits(settings, SHARED_STATE.of(app)))
    # Set before start-up, so the kit's outbox relay sends through the same pools as the proxy.
    UPSTREAMS.set(
        app,
        Upstreams(
            settings.upstreams,
            timeout=settings.upstream_timeout_seconds,
            bulk_timeout=settings.upstream_bulk_timeout_seconds,
            connect_timeout=settings.upstream_connect_timeout_seconds,
            internal_token=settings.internal_token,
            max_concurrency=settings.upstream_max_concurrency,
            queue_seconds=settings.upstream_queue_seconds,
        ),
    )
    _serve_merged_openapi(app)
    console.install(app)
    return app


def _serve_merged_openapi(app: FastAPI) -> None:
    merged: dict[str, Any] = {}

    async def merged_openapi() -> JSONResponse:
        if not merged:
            own = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            own.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            upstreams = UPSTREAMS.of(app)
            documents = await openapi.fetch_service_documents(upstreams)
            document = openapi.merge(own, documents)
            if len(documents) < len(upstreams.urls):
                return JSONResponse(document, headers={"Cache-Control": "no-store"})
            merged.update(document)
        return JSONResponse(merged)

    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/openapi.json"]
    app.add_api_route("/openapi.json", merged_openapi, include_in_schema=False)
