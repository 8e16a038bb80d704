"""Every item of a paginated list, page after page: an assert about "not in the list" (or "the list is unchanged")
that read only the first page would pass whatever was added past it."""

from __future__ import annotations

from typing import Any

import httpx


async def every_item(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        response = await client.get(path, params={**params, "limit": 200, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items
