from pathlib import Path

from fastapi import FastAPI

from kit.app import ServiceSpec, create_service_app
from kit.background import PeriodicJob
from kit.experiments import experiments_router
from points import service
from points.api import router
from points.events import HANDLERS
from points.settings import PointsSettings

SCHEMA = "points"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


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
        routers=[router, experiments_router({"bonus_campaign": service.bonus_campaign_exists})],
        migrations_dir=MIGRATIONS_DIR,
        event_handlers=HANDLERS,
        outbox_consumers={"gateway": settings.gateway_url},
        jobs=jobs,
        description="The loyalty ledger: earning rules, tiers, lots that expire, redemptions and reversals.",
    )
    return create_service_app(spec, settings)
