"""Structured logging: JSON or console lines, each carrying the request id of the request it belongs to."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import structlog

__all__ = ["bound_request_id", "configure_logging", "request_id_var"]

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


@contextmanager
def bound_request_id(request_id: str | None) -> Iterator[None]:
    """Log lines (and calls to other services, and events published) inside the block name `request_id`: the
    request that caused the work, when the work is not that request (an event being handled). None changes
    nothing."""
    if request_id is None:
        yield
        return
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


def _add_request_id(_: object, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    request_id = request_id_var.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def configure_logging(level: str = "INFO", fmt: str = "console", service: str | None = None) -> None:
    """Route structlog and the standard library (uvicorn, sqlalchemy, alembic) through one renderer."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.insert(0, lambda _l, _m, e: {**e, "service": service} if "service" not in e else e)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # One line per outgoing call is noise at INFO; failures are logged by the caller.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    # Access lines duplicate our own request log line, which carries the request id.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
