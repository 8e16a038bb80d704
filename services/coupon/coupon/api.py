"""HTTP routes of the coupon service: thin, each a call into the domain layer."""

from kit.db import service_router

router = service_router(tags=["coupon"])
