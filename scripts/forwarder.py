"""A bare forwarding proxy (no auth, no routing), with httpx or aiohttp: the benchmark's yardstick for what the
HTTP client alone costs, beside our gateway. Bench-only: `python -m scripts.forwarder httpx|aiohttp UPSTREAM PORT`."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host"}


def build(kind: str, upstream: str, token: str) -> Any:
    if kind == "httpx":
        import httpx

        client = httpx.AsyncClient(
            base_url=upstream, limits=httpx.Limits(max_connections=256, max_keepalive_connections=256)
        )

        async def forward(method: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, list, bytes]:
            response = await client.request(method, path, headers=headers)
            return response.status_code, list(response.headers.raw), response.content

    else:
        import aiohttp

        session: aiohttp.ClientSession | None = None

        async def forward(method: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, list, bytes]:
            nonlocal session
            if session is None:
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
            async with session.request(method, upstream + path, headers=headers) as response:
                return response.status, list(response.raw_headers), await response.read()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in HOP]
        headers.append(("X-Internal-Token", token))
        status, raw, body = await forward(scope["method"], path, headers)
        out = [
            (k.lower() if isinstance(k, bytes) else k.lower().encode(), v if isinstance(v, bytes) else v.encode())
            for k, v in raw
        ]
        out = [(k, v) for k, v in out if k not in HOP] + [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    kind, upstream, port, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    uvicorn.run(build(kind, upstream, token), host="127.0.0.1", port=port, log_level="warning", access_log=False)
