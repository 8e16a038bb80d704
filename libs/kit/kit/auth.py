"""Who is calling a service.

Services sit behind the gateway: they accept a call only with `X-Internal-Token`, and then trust the caller
headers the gateway set (`X-Caller-Kind`, `X-Caller-Id`, `X-Caller-Scopes`). A customer token's calls carry
kind `customer` and the customer's id.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kit.errors import NotFound, problem_response

__all__ = [
    "CALLER_ID_HEADER",
    "CALLER_KIND_HEADER",
    "CALLER_SCOPES_HEADER",
    "INTERNAL_TOKEN_HEADER",
    "Caller",
    "CallerDep",
    "InternalTokenMiddleware",
]

INTERNAL_TOKEN_HEADER = "X-Internal-Token"
CALLER_KIND_HEADER = "X-Caller-Kind"
CALLER_ID_HEADER = "X-Caller-Id"
CALLER_SCOPES_HEADER = "X-Caller-Scopes"

CallerKind = Literal["admin", "partner", "customer", "internal", "public"]
ALWAYS_OPEN = ("/healthz", "/readyz", "/metrics")


@dataclass(frozen=True)
class Caller:
    kind: CallerKind
    id: str
    scopes: frozenset[str]

    @property
    def customer_id(self) -> str | None:
        return self.id if self.kind == "customer" else None

    def require_customer(self, customer_id: str) -> None:
        """A customer token reaches only its own resources; another customer's are 'not found'."""
        if self.kind == "customer" and self.id != customer_id:
            raise NotFound("No such resource.")


def get_caller(request: Request) -> Caller:
    headers = request.headers
    kind = headers.get("x-caller-kind", "internal")
    if kind not in ("admin", "partner", "customer", "internal", "public"):
        kind = "internal"
    scopes = frozenset(s for s in headers.get("x-caller-scopes", "").split() if s)
    return Caller(kind=kind, id=headers.get("x-caller-id", "internal"), scopes=scopes)  # type: ignore[arg-type]


async def _caller_dependency(request: Request) -> Caller:
    # `async def`: FastAPI runs plain `def` dependencies in its thread pool, a hand-off per request.
    return get_caller(request)


CallerDep = Annotated[Caller, Depends(_caller_dependency)]


class InternalTokenMiddleware:
    """Refuse every call without the internal token, except health checks and the given public prefixes."""

    def __init__(self, app: ASGIApp, *, token: str, public_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.token = token.encode()
        self.open_prefixes = ALWAYS_OPEN + public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(self.open_prefixes):
            presented = b""
            for name, value in scope["headers"]:
                if name == b"x-internal-token":
                    presented = value
                    break
            if not hmac.compare_digest(presented, self.token):
                response = problem_response(
                    401, "internal_token_required", "This service is reachable only through the gateway."
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
