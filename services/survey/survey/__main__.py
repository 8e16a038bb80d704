from kit.cli import main
from survey.app import MIGRATIONS_DIR, SCHEMA
from survey.settings import SurveySettings

main(
    name="survey",
    factory="survey.app:create_app",
    settings_factory=SurveySettings,
    port=lambda settings: settings.port,  # type: ignore[attr-defined]
    migrations_dir=MIGRATIONS_DIR,
    schema=SCHEMA,
)
