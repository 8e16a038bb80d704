from pathlib import Path

from fastapi import FastAPI

from kit.app import ServiceSpec, create_service_app
from kit.background import PeriodicJob
from kit.contracts import PurchaseCreated
from kit.experiments import experiments_router
from kit.leases import Backoff, Lease
from kit.state import DATABASE
from survey import api, pages, service
from survey.events import purchase_created_handler
from survey.mail import MailConfig, MailSender
from survey.settings import SurveySettings

SCHEMA = "survey"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_app(settings: SurveySettings | None = None) -> FastAPI:
    settings = settings or SurveySettings()  # type: ignore[call-arg]

    policy = api.policy_from(settings)

    def jobs(app: FastAPI) -> list[PeriodicJob]:
        sender = MailSender(DATABASE.of(app), mail_config(settings))
        return [PeriodicJob("survey.mail_sender", settings.mail_poll_seconds, sender.run_until_idle)]

    spec = ServiceSpec(
        name="survey",
        schema=SCHEMA,
        routers=[api.router, pages.router, experiments_router({"survey_reward": service.survey_exists})],
        migrations_dir=MIGRATIONS_DIR,
        description="Surveys, email invitations, public answer pages and NPS/CSAT results.",
        event_handlers={
            PurchaseCreated.type: purchase_created_handler(
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


def mail_config(settings: SurveySettings) -> MailConfig:
    return MailConfig(
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        smtp_username=settings.smtp_username,
        smtp_password=settings.smtp_password,
        starttls=settings.use_starttls,
        smtp_timeout_seconds=settings.smtp_timeout_seconds,
        sender=settings.smtp_from,
        mail_dir=settings.mail_dir,
        batch_size=settings.mail_batch_size,
        connections=settings.mail_connections,
        max_attempts=settings.mail_max_attempts,
        lease=Lease(settings.mail_lease_seconds),
        backoff=Backoff(settings.mail_retry_base_seconds, settings.mail_retry_max_seconds),
    )
