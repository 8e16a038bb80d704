from coupon.app import MIGRATIONS_DIR, SCHEMA
from coupon.settings import CouponSettings
from kit.cli import main

main(
    name="coupon",
    factory="coupon.app:create_app",
    settings_factory=CouponSettings,
    port=lambda settings: settings.port,  # type: ignore[attr-defined]
    migrations_dir=MIGRATIONS_DIR,
    schema=SCHEMA,
)
