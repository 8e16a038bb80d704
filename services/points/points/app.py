from pathlib import Path

from fastapi import FastAPI

from kit.app import ServiceSpec, create_service_app
from points.api import router
from points.settings import PointsSettings

SCHEMA = "points"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_app(settings: PointsSettings | None = None) -> FastAPI:
    settings = settings or PointsSettings()  # type: ignore[call-arg]
    spec = ServiceSpec(
        name="points",
        schema=SCHEMA,
        routers=[router],
        migrations_dir=MIGRATIONS_DIR,
        description="The loyalty ledger: earning rules, tiers, lots that expire, redemptions and reversals.",
    )
    return create_service_app(spec, settings)
