from gateway.app import MIGRATIONS_DIR, SCHEMA
from gateway.settings import GatewaySettings
from kit.cli import main

main(
    name="gateway",
    factory="gateway.app:create_app",
    settings_factory=GatewaySettings,
    port=lambda settings: settings.port,  # type: ignore[attr-defined]
    migrations_dir=MIGRATIONS_DIR,
    schema=SCHEMA,
)
