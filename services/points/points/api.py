"""HTTP routes of the points service: thin, each a call into the domain layer."""

from kit.db import service_router

router = service_router(tags=["points"])
