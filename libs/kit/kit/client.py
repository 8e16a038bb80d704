"""The internal HTTP client: one pooled `httpx.AsyncClient` per upstream, explicit timeouts, and the
request id and internal token forwarded on every call."""

from __future__ import annotations

from typing import Any

import httpx

from kit.auth import INTERNAL_TOKEN_HEADER
from kit.logging import request_id_var

__all__ = ["InternalClient"]


class InternalClient:
    def __init__(
        self,
        base_url: str,
        internal_token: str,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        max_connections: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={INTERNAL_TOKEN_HEADER: internal_token},
        )

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        request_id = request_id_var.get()
        if request_id:
            headers.setdefault("X-Request-ID", request_id)
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        return await self._http.request(method, path, headers=self._headers(headers), **extra, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()
