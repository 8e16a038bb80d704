from kit.migrations import run_env
from points.tables import metadata

run_env(metadata, schema="points")
