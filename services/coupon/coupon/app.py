from pathlib import Path

from fastapi import FastAPI

from coupon.api import router
from coupon.settings import CouponSettings
from kit.app import ServiceSpec, create_service_app

SCHEMA = "coupon"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_app(settings: CouponSettings | None = None) -> FastAPI:
    settings = settings or CouponSettings()  # type: ignore[call-arg]
    spec = ServiceSpec(
        name="coupon",
        schema=SCHEMA,
        routers=[router],
        migrations_dir=MIGRATIONS_DIR,
        description="Campaigns, unguessable codes, issuance, validation, redemptions and surprise rules.",
    )
    return create_service_app(spec, settings)
