from coupon.tables import metadata
from kit.migrations import run_env

run_env(metadata, schema="coupon")
