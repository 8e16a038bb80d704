from pathlib import Path

from fastapi import FastAPI

from coupon.api import RUNTIME, router
from coupon.events import handlers
from coupon.experiments import gift_rule_exists, rule_exists
from coupon.guards import FormatCache, GuessThrottle, LocalGuessThrottle, SharedGuessThrottle
from coupon.jobs import CodeJobRunner
from coupon.runtime import CouponRuntime
from coupon.settings import CouponSettings
from kit.app import ServiceSpec, create_service_app
from kit.background import PeriodicJob
from kit.experiments import experiments_router
from kit.state import DATABASE, SHARED_STATE, AppState

SCHEMA = "coupon"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"

CODE_JOBS: AppState[CodeJobRunner] = AppState("code_jobs")


def create_app(settings: CouponSettings | None = None) -> FastAPI:
    settings = settings or CouponSettings()  # type: ignore[call-arg]
    local = LocalGuessThrottle(settings.guess_limit, settings.guess_caller_limit, settings.guess_window_seconds)
    throttle: GuessThrottle = local
    runners: list[CodeJobRunner] = []

    async def wake_jobs() -> None:
        for runner in runners:
            await runner.wake()

    runtime = CouponRuntime(
        throttle=throttle,
        formats=FormatCache(),
        wake_jobs=wake_jobs,
        min_guess_bits=settings.min_guess_bits,
        sync_codes_max=settings.sync_codes_max,
        recent_purchase_hours=settings.recent_purchase_hours,
    )

    async def on_startup(app: FastAPI) -> None:
        if not settings.runs_background:
            return  # a worker replica claims the jobs this process queues
        runner = CodeJobRunner(DATABASE.of(app), settings.code_batch_size)
        runners.append(runner)
        CODE_JOBS.set(app, runner)
        runner.start()

    async def on_shutdown(app: FastAPI) -> None:
        for runner in runners:
            await runner.stop()

    async def prune_throttle() -> None:
        throttle.prune()

    spec = ServiceSpec(
        name="coupon",
        schema=SCHEMA,
        routers=[router, experiments_router({"coupon_rule": rule_exists, "reward": gift_rule_exists})],
        migrations_dir=MIGRATIONS_DIR,
        description="Campaigns, unguessable codes, issuance, validation, redemptions and surprise rules.",
        event_handlers=handlers(runtime),
        outbox_consumers={"gateway": settings.gateway_url, "points": settings.points_url},
        api_jobs=lambda _app: [PeriodicJob("coupon.throttle.prune", 60, prune_throttle)],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )
    app = create_service_app(spec, settings)
    if settings.redis_url:  # one budget for every replica, in Redis (the local throttle while it is away)
        runtime.throttle = SharedGuessThrottle(SHARED_STATE.of(app), local)
    RUNTIME.set(app, runtime)
    return app
