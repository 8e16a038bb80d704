"""RFC 9457 problem details, rendered in one place for every process.

Domain code raises subclasses of :class:`DomainError`; it never imports FastAPI. The hierarchy::

    DomainError (400 bad_request)
    ├── NotFound (404 not_found)
    ├── Conflict (409 conflict)            e.g. insufficient_points, coupon_exhausted
    ├── Unprocessable (422 unprocessable)  e.g. coupon_not_applicable, idempotency_key_reused
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── TooManyRequests (429 rate_limited)  carries Retry-After
    └── ServiceUnavailable (503 service_unavailable)

Request validation errors become 422 `validation_error` with `errors: [{field, message}]`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from kit.json import dumps
from kit.logging import request_id_var

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "Conflict",
    "DomainError",
    "FieldError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "ValidationFailed",
    "field_errors",
    "install_error_handlers",
    "problem_response",
    "problem_responses",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
log = structlog.get_logger("kit.errors")


class DomainError(Exception):
    """A refusal the caller can act on. A subclass names its status and default code as class keywords:
    `class Gone(DomainError, status=410, code="gone"): ...`."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        keep_changes: bool = False,
        **extra: Any,
    ) -> None:
        """`keep_changes`: the request's transaction commits all the same. Only for work that was due whatever
        the caller asked (points expired on the way to a refused redemption), never for the refused change."""
        super().__init__(detail)
        self.detail = detail
        self.instance_code = code or self.code
        self.headers = headers or {}
        self.keep_changes = keep_changes
        self.extra = extra


class NotFound(DomainError, status=404, code="not_found"): ...


class Conflict(DomainError, status=409, code="conflict"): ...


class Unprocessable(DomainError, status=422, code="unprocessable"): ...


class Unauthorized(DomainError, status=401, code="unauthorized"):
    def __init__(self, detail: str = "A valid bearer token is required.", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kw)


class Forbidden(DomainError, status=403, code="forbidden"): ...


class TooManyRequests(DomainError, status=429, code="rate_limited"):
    def __init__(self, detail: str, *, retry_after: int, **kw: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))}, **kw)


class ServiceUnavailable(DomainError, status=503, code="service_unavailable"): ...


class PayloadTooLarge(DomainError, status=413, code="payload_too_large"): ...


class UnsupportedMediaType(DomainError, status=415, code="unsupported_media_type"): ...


class FieldError(dict[str, str]):
    """One `{field, message}` entry of a validation problem."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field=field, message=message)


class ValidationFailed(Unprocessable):
    """Semantic validation failure in domain code, reported like a request validation error."""

    code = "validation_error"

    def __init__(self, errors: Sequence[FieldError], detail: str = "The request is not valid.") -> None:
        super().__init__(detail, errors=list(errors))


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    title: str | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": f"https://reciprocity.dev/problems/{code.replace('_', '-')}",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    request_id = request_id_var.get()
    if request_id is not None:
        # Quoted by a caller reporting a problem, it finds every log line of the request.
        body["request_id"] = request_id
    return Response(dumps(body), status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


def _field_path(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def _validation_message(error: dict[str, Any]) -> str:
    if error.get("type") == "extra_forbidden":
        return "Unknown field."
    return str(error.get("msg", "Invalid value."))


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[FieldError]:
    """pydantic's errors as `{field, message}` entries (a request body's, or one line of a bulk import's)."""
    return [FieldError(_field_path(e.get("loc", ())), _validation_message(e)) for e in errors]  # type: ignore[arg-type]


async def _domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return problem_response(exc.status, exc.instance_code, exc.detail, headers=exc.headers, **exc.extra)


async def _request_validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    return problem_response(422, "validation_error", "The request is not valid.", errors=errors)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
        exc.status_code, HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    )
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).description
    return problem_response(exc.status_code, code, detail, headers=dict(exc.headers or {}))


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.CannotConnectNowError,
    # class 08 (connection exceptions), and a statement cut short by a server shutting down or crashing
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    # a raw-driver statement on a connection whose previous operation the server's death cut short: the protocol is
    # left mid-operation ("cannot switch to state ..."), the connection is discarded, and a retry gets a fresh one
    asyncpg.exceptions.InternalClientError,
)


def _database_unreachable(exc: Exception) -> bool:
    """The database refused or dropped the connection, or the pool had none to give: worth a retry.

    The driver's error may come wrapped once (SQLAlchemy's DBAPIError, `.orig`) or twice (the asyncpg adapter's own
    error class, raised on raw-driver paths, with the asyncpg exception as its cause): the chain is followed."""
    if isinstance(exc, (sa_exc.TimeoutError, sa_exc.InterfaceError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    current: BaseException | None = exc
    for _ in range(4):
        if current is None:
            return False
        if isinstance(current, _CONNECTION_ERRORS):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


async def _unexpected_error(_: Request, exc: Exception) -> Response:
    return unexpected_error_response(exc)


def unexpected_error_response(exc: Exception) -> Response:
    """The answer to an exception no handler expected: 503 when the database is away (worth a retry), else a
    logged 500. Also used by ASGI layers that run outside Starlette's error handling (the gateway's front door)."""
    if _database_unreachable(exc):
        log.warning("request.database_unavailable", error=type(exc).__name__)
        return problem_response(
            503,
            "database_unavailable",
            "The database is not reachable right now; retry shortly.",
            headers={"Retry-After": "1"},
        )
    log.exception("request.failed", error=type(exc).__name__)
    return problem_response(500, "internal_error", "An unexpected error occurred; it has been logged.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


_PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route, so the OpenAPI shows each problem it may answer."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
