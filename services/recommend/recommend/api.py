"""HTTP routes of the recommend service: thin, each a call into the domain layer."""

from kit.db import service_router

router = service_router(tags=["recommend"])
