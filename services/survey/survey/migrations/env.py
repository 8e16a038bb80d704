from kit.migrations import run_env
from survey.tables import metadata

run_env(metadata, schema="survey")
