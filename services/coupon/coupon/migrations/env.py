from kit.migrations import run_env
from coupon.tables import metadata

run_env(metadata, schema="coupon")
