from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from kit.app import ServiceSpec, create_service_app
from kit.background import PeriodicJob
from kit.experiments import experiments_router
from kit.leases import Backoff
from kit.state import DATABASE
from points import rewards, service
from points.api import router
from points.coupons import CouponClient
from points.events import HANDLERS
from points.rewards_api import REWARDS
from points.rewards_api import router as rewards_router
from points.settings import PointsSettings

SCHEMA = "points"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_app(settings: PointsSettings | None = None) -> FastAPI:
    settings = settings or PointsSettings()  # type: ignore[call-arg]

    async def on_startup(app: FastAPI) -> None:
        coupons = CouponClient(settings.coupon_url, settings.internal_token, settings.coupon_timeout_seconds)
        runtime = rewards.RewardsRuntime(
            DATABASE.of(app),
            coupons,
            retry_after=timedelta(seconds=settings.coupon_timeout_seconds + 1),
            issue_deadline=timedelta(seconds=settings.reward_issue_deadline_seconds),
            retry_backoff=Backoff(settings.reward_retry_interval_seconds, settings.reward_retry_max_delay_seconds),
        )
        REWARDS.set(app, runtime)

    async def on_shutdown(app: FastAPI) -> None:
        await REWARDS.of(app).coupons.aclose()

    def jobs(app: FastAPI) -> list[PeriodicJob]:
        return [
            PeriodicJob(
                "points.expiry",
                settings.expiry_interval_seconds,
                lambda: service.expire_due(DATABASE.of(app)),
                initial_delay_seconds=min(60.0, settings.expiry_interval_seconds),
            ),
            # coupon rewards whose code is not known yet: ask again, or past the deadline void and refund
            PeriodicJob(
                "points.reward_issuance",
                settings.reward_retry_interval_seconds,
                lambda: rewards.settle_issuing(REWARDS.of(app)),
                initial_delay_seconds=settings.reward_retry_interval_seconds,
            ),
        ]

    spec = ServiceSpec(
        name="points",
        schema=SCHEMA,
        routers=[router, experiments_router({"bonus_campaign": service.bonus_campaign_exists}), rewards_router],
        migrations_dir=MIGRATIONS_DIR,
        event_handlers=HANDLERS,
        outbox_consumers={"gateway": settings.gateway_url},
        jobs=jobs,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        description="The loyalty ledger: earning rules, tiers, lots that expire, redemptions and reversals, "
        "and the rewards catalogue that points buy.",
    )
    return create_service_app(spec, settings)
