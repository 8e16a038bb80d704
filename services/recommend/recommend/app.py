from pathlib import Path

from fastapi import FastAPI

from kit.app import ServiceSpec, create_service_app
from recommend.api import router
from recommend.settings import RecommendSettings

SCHEMA = "recommend"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_app(settings: RecommendSettings | None = None) -> FastAPI:
    settings = settings or RecommendSettings()  # type: ignore[call-arg]
    spec = ServiceSpec(
        name="recommend",
        schema=SCHEMA,
        routers=[router],
        migrations_dir=MIGRATIONS_DIR,
        description="Catalog, purchase history, preferences and personal recommendations.",
    )
    return create_service_app(spec, settings)
