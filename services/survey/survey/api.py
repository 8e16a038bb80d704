"""HTTP routes of the survey service: thin, each a call into the domain layer."""

from kit.db import service_router

router = service_router(tags=["survey"])
