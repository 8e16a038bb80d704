import gateway.webhooks.tables  # noqa: F401  (adds the webhook tables to the gateway's metadata)
from gateway.tables import metadata
from kit.migrations import run_env

run_env(metadata, schema="gateway")
