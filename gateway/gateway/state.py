"""What the gateway keeps in its app state, typed (`kit.state`): set once at start-up, read by routes as
dependencies. The front door reads the same attributes straight from `app.state` (its hot path)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends

from gateway.settings import GatewaySettings
from kit.client import Upstreams
from kit.state import AppState

if TYPE_CHECKING:
    from gateway.limits import Limits
    from gateway.overview import CircuitBreaker, ReadModel
    from gateway.principals import Authenticator
    from gateway.webhooks.delivery import WebhookDispatcher

__all__ = [
    "AUTHENTICATOR",
    "BREAKERS",
    "LIMITS",
    "OVERVIEW",
    "SETTINGS",
    "UPSTREAMS",
    "WEBHOOKS",
    "SettingsDep",
    "UpstreamsDep",
]

SETTINGS: AppState[GatewaySettings] = AppState("settings")
AUTHENTICATOR: AppState[Authenticator] = AppState("authenticator")
# one pooled client per service for every call the gateway makes: proxying, the overview, the console, levers
UPSTREAMS: AppState[Upstreams] = AppState("upstreams")
BREAKERS: AppState[dict[str, CircuitBreaker]] = AppState("breakers")
OVERVIEW: AppState[ReadModel] = AppState("overview")
LIMITS: AppState[Limits] = AppState("limits")
WEBHOOKS: AppState[WebhookDispatcher] = AppState("webhooks")

SettingsDep = Annotated[GatewaySettings, Depends(SETTINGS)]
UpstreamsDep = Annotated[Upstreams, Depends(UPSTREAMS)]
