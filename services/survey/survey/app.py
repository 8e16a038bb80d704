from pathlib import Path

from fastapi import FastAPI

from kit.app import ServiceSpec, create_service_app
from survey.api import router
from survey.settings import SurveySettings

SCHEMA = "survey"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_app(settings: SurveySettings | None = None) -> FastAPI:
    settings = settings or SurveySettings()  # type: ignore[call-arg]
    spec = ServiceSpec(
        name="survey",
        schema=SCHEMA,
        routers=[router],
        migrations_dir=MIGRATIONS_DIR,
        description="Surveys, email invitations, public answer pages and NPS/CSAT results.",
    )
    return create_service_app(spec, settings)
