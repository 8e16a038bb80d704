"""Typed application state: what a process builds at start-up (its database, its settings, a runtime for its
domain) and its routes read back, without `request.app.state.x  # type: ignore`.

Starlette's `app.state` takes any attribute and gives `Any` back. Each thing kept there is declared once, with
its type, as an :class:`AppState` key; the app sets it at start-up and a route takes it as a dependency:

    RUNTIME: AppState[CouponRuntime] = AppState("coupon_runtime")
    RuntimeDep = Annotated[CouponRuntime, Depends(RUNTIME)]      # a route parameter
    RUNTIME.set(app, CouponRuntime(...))                         # in create_app / on_startup
    RUNTIME.of(app)                                              # elsewhere (jobs, shutdown)

The kit's own keys are below: the database, the settings (each service declares its own key for its settings
subclass under the same name), the shared state and the HTTP client to other services.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from kit.client import Upstreams
    from kit.db import Database
    from kit.settings import ServiceSettings
    from kit.shared_state import SharedState

__all__ = ["DATABASE", "SETTINGS", "SHARED_STATE", "UPSTREAMS", "AppState"]

T = TypeVar("T")


class AppState(Generic[T]):
    """One thing kept in `app.state` under `name`, of type `T`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def set(self, app: Any, value: T) -> T:
        setattr(app.state, self.name, value)
        return value

    def of(self, app: Any) -> T:
        """The value the app was given (a `LookupError` before start-up set it: a wiring mistake)."""
        try:
            return cast(T, getattr(app.state, self.name))
        except AttributeError:
            raise LookupError(f"app.state.{self.name} is not set (yet)") from None

    def get(self, app: Any) -> T | None:
        """The value, or None when this process was not given one (a worker without the API's runtime)."""
        return cast("T | None", getattr(app.state, self.name, None))

    def __call__(self, request: HTTPConnection) -> T:
        """As a FastAPI dependency: the value of the app serving the request."""
        return self.of(request.app)

    def __repr__(self) -> str:
        return f"AppState({self.name!r})"


DATABASE: AppState[Database] = AppState("database")
SETTINGS: AppState[ServiceSettings] = AppState("settings")
SHARED_STATE: AppState[SharedState] = AppState("shared_state")
# the process's one pooled client per service it calls (kit.client): its outbox relay's, and the gateway's
UPSTREAMS: AppState[Upstreams] = AppState("upstreams")
