from kit.migrations import run_env
from recommend.tables import metadata

run_env(metadata, schema="recommend")
