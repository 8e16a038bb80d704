from kit.cli import main
from points.app import MIGRATIONS_DIR, SCHEMA
from points.settings import PointsSettings

main(
    name="points",
    factory="points.app:create_app",
    settings_factory=PointsSettings,
    port=lambda settings: settings.port,  # type: ignore[attr-defined]
    migrations_dir=MIGRATIONS_DIR,
    schema=SCHEMA,
)
