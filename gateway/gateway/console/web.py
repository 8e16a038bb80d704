"""What every console page shares: templates, security headers, the session cookie, CSRF checks and the
signed-in context (:class:`Console`) that page handlers receive."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRouter
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from gateway.console import sessions
from gateway.console.caller import Caller
from gateway.principals import Principal
from gateway.state import LIMITS, SETTINGS, UPSTREAMS
from kit.db import SessionDep, TransactionalRoute
from kit.errors import DomainError

__all__ = [
    "COOKIE",
    "Console",
    "ConsoleDep",
    "CsrfRefused",
    "console_router",
    "page",
    "redirect",
    "verify_csrf",
]

COOKIE = "rcp_console"
LOGIN_COOKIE = "rcp_console_login"
PATH = "/console"
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # no script at all; styles and images from the gateway itself; forms post only here
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}
_NEXT = re.compile(r"/console/[A-Za-z0-9/_.:-]{0,200}")

templates = Environment(
    loader=PackageLoader("gateway.console", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignInNeeded(DomainError, status=401, code="console_sign_in_needed"): ...


class CsrfRefused(DomainError, status=403, code="csrf_refused"): ...


@dataclass
class Console:
    """The signed-in person's context: who they are, how to call the API as them, and their CSRF token."""

    request: Request
    principal: Principal
    caller: Caller
    csrf_token: str
    token_hash: str

    def can(self, method: str, path: str) -> bool:
        return self.caller.allowed(method, path)

    @property
    def who(self) -> str:
        return "admin" if self.principal.kind == "admin" else f"key {self.principal.id[:8]}"


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https" or str(SETTINGS.of(request.app).public_base_url).startswith("https:")


def set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name, value, path=PATH, httponly=True, samesite="strict", secure=secure_cookies(request), max_age=None
    )


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("console", None)
    context.setdefault("note", None)
    html = templates.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


def safe_next(value: str | None) -> str:
    return value if value and _NEXT.fullmatch(value) and ".." not in value else "/console/"


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def same_origin(request: Request) -> bool:
    """A browser names the page a form was posted from; one from elsewhere is refused whatever it carries."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def form_of(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def verify_csrf(request: Request, expected: str, form: dict[str, str]) -> None:
    sent = form.get("csrf", "")
    if not same_origin(request) or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused("This form has expired or did not come from the console; please try again.")


async def _console(request: Request, session: SessionDep) -> Console:
    settings = SETTINGS.of(request.app)
    token = request.cookies.get(COOKIE)
    found = None
    if token:
        found = await sessions.load(
            session, token, admin_key=settings.admin_key, idle_seconds=settings.console_idle_seconds
        )
    if found is None:
        raise SignInNeeded("Please sign in.")
    if found.principal.kind != "admin":
        await LIMITS.of(request.app).check_caller(found.principal)
    caller = Caller(
        found.principal, UPSTREAMS.of(request.app), settings.internal_token, request.state.request_id, request.app
    )
    console = Console(request, found.principal, caller, found.csrf_token, found.token_hash)
    if request.method == "POST":
        verify_csrf(request, found.csrf_token, await form_of(request))
    return console


ConsoleDep = Annotated[Console, Depends(_console)]


class ConsoleRoute(TransactionalRoute):
    """Refusals as a person should see them: sign in again (GET: straight to the form), or an HTML page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded:
                if request.method == "GET":
                    return redirect("/console/login?next=" + quote(safe_next(request.url.path), safe="/"))
                return page(request, "refused.html", 401, title="Signed out", text="Your session has ended.")
            except CsrfRefused as exc:
                return page(request, "refused.html", 403, title="Refused", text=exc.detail)
            except DomainError as exc:
                return page(request, "refused.html", exc.status, title="Refused", text=exc.detail)

        return guarded


def console_router() -> APIRouter:
    return APIRouter(route_class=ConsoleRoute, include_in_schema=False)
