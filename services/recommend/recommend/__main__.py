from kit.cli import main
from recommend.app import MIGRATIONS_DIR, SCHEMA
from recommend.settings import RecommendSettings

main(
    name="recommend",
    factory="recommend.app:create_app",
    settings_factory=RecommendSettings,
    port=lambda settings: settings.port,  # type: ignore[attr-defined]
    migrations_dir=MIGRATIONS_DIR,
    schema=SCHEMA,
)
