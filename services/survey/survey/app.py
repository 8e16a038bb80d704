from pathlib import Path

from fastapi import FastAPI

from kit.app import ServiceSpec, create_service_app
from kit.background import PeriodicJob
from kit.experiments import experiments_router
from kit.state import DATABASE
from survey import api, pages, service
from survey.events import purchase_created_handler
from survey.mail import MailSender
from survey.settings import SurveySettings

SCHEMA = "survey"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_app(settings: SurveySettings | None = None) -> FastAPI:
    settings = settings or SurveySettings()  # type: ignore[call-arg]

    policy = api.policy_from(settings)

    def jobs(app: FastAPI) -> list[PeriodicJob]:
        sender = MailSender(DATABASE.of(app), settings)
        return [PeriodicJob("survey.mail_sender", settings.mail_poll_seconds, sender.run_until_idle)]

    spec = ServiceSpec(
        name="survey",
        schema=SCHEMA,
        routers=[api.router, pages.router, experiments_router({"survey_reward": service.survey_exists})],
        migrations_dir=MIGRATIONS_DIR,
        description="Surveys, email invitations, public answer pages and NPS/CSAT results.",
        event_handlers={
            "purchase.created": purchase_created_handler(
                policy, settings.post_purchase_delay_seconds, settings.recent_purchase_hours
            ),
        },
        outbox_consumers={
            "points": settings.points_url,
            "coupon": settings.coupon_url,
            "recommend": settings.recommend_url,
            "gateway": settings.gateway_url,
        },
        jobs=jobs,
        public_prefixes=("/s/",),
    )
    app = create_service_app(spec, settings)
    api.POLICY.set(app, policy)
    return app
