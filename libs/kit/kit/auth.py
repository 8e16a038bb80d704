"""Who is calling a service.

Services sit behind the gateway: they accept a call only with `X-Internal-Token`, and then trust the caller
headers the gateway set (`X-Caller-Kind`, `X-Caller-Id`, `X-Caller-Scopes`). A customer token's calls carry
kind `customer` and the customer's id.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kit.errors import Forbidden, NotFound, problem_response

__all__ = [
    "CALLER_ID_HEADER",
    "CALLER_KIND_HEADER",
    "CALLER_SCOPES_HEADER",
    "INTERNAL_TOKEN_HEADER",
    "Caller",
    "CallerDep",
    "InternalTokenMiddleware",
    "requires",
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
    # a customer token's minter (`partner:<key id>`, `admin:admin`), as the gateway read it from the token
    issuer: str | None = None

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
        kind = "public"  # an unknown kind gets the least
    scopes = frozenset(s for s in headers.get("x-caller-scopes", "").split() if s)
    return Caller(
        kind=kind,  # type: ignore[arg-type]
        id=headers.get("x-caller-id", "internal"),
        scopes=scopes,
        issuer=headers.get("x-caller-issuer") if kind == "customer" else None,
    )


async def _caller_dependency(request: Request) -> Caller:
    # `async def`: FastAPI runs plain `def` dependencies in its thread pool, a hand-off per request.
    return get_caller(request)


CallerDep = Annotated[Caller, Depends(_caller_dependency)]


def requires(scope: str | None = None, *, customer: bool = False) -> Any:
    """A route's access rule, as a dependency: `dependencies=[requires("points:write", customer=True)]`.

    The gateway's route table decides first; each service decides again on its own, so a path that slipped
    past the gateway, or a call from inside the deployment with forged caller headers of a lesser kind, still
    meets the rule. `scope` None means admin only. A customer token passes only where `customer` is set, and
    on a path naming a customer only for its own id (another customer's is 404). Internal calls (other
    services, the gateway's own fan-out) and the admin pass.
    """

    async def check(request: Request) -> None:
        caller = get_caller(request)
        if caller.kind in ("internal", "admin"):
            return
        if caller.kind == "customer":
            if not customer:
                raise Forbidden("A customer token cannot call this operation.")
            customer_id = request.path_params.get("customer_id")
            if customer_id is not None and customer_id != caller.id:
                raise NotFound("No such resource.")
            return
        needed = scope or "admin"
        if caller.kind != "partner" or not (needed in caller.scopes or "admin" in caller.scopes):
            raise Forbidden(f"This caller lacks the {needed!r} scope.", code="missing_scope", required_scope=needed)

    return Depends(check)


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
            if _caller_kind(scope) == b"public":
                # an anonymous caller reaches the public pages only, whatever path it managed to send
                response = problem_response(404, "not_found", "No such resource.")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _caller_kind(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"x-caller-kind":
            return value
    return None
