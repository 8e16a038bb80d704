"""Every list route, through the gateway: a cursor it did not hand out is a 422 problem+json on `cursor`.

The routes are read from the merged OpenAPI (every GET with a `cursor` parameter), so a list added later is
covered without touching this file. A cursor is no secret: a client can forge, truncate or carry one over from
another list, and none of that may reach the database as a 500.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

from tests.conftest import Platform


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


FORGED = {
    "not base64 JSON": "garbage!",
    "truncated": _cursor(["t,u", "2026-12-03T00:00:00+00:00", str(uuid.UUID(int=1))])[:-6],
    "not a list": _cursor({"id": 1}),
    "empty": _cursor([]),
    "nested": _cursor([["x"], {"a": 1}]),
    "a huge number": _cursor([10**30]),
    "a float": _cursor([1e308]),
    "wrong types": _cursor(["2026-12-03T00:00:00+00:00", 1.5]),
    "a time no timestamptz holds": _cursor(["0001-01-01T00:00:00+05:00", str(uuid.UUID(int=1))]),
    "from a list keyed by an int": _cursor(["i", 12]),
    "from a list keyed by time and id": _cursor(["t,u", "2026-12-03T00:00:00+00:00", str(uuid.UUID(int=1))]),
    "from a list keyed by points and id": _cursor(["i,u", 100, str(uuid.UUID(int=1))]),
}


def list_routes(document: dict[str, Any]) -> list[str]:
    routes = []
    for path, operations in document["paths"].items():
        get = operations.get("get")
        if get and any(p["name"] == "cursor" and p["in"] == "query" for p in get.get("parameters", [])):
            routes.append(path)
    return sorted(routes)


def _required_query(path: str, document: dict[str, Any]) -> dict[str, str]:
    """Required query parameters (a list's fixed `status=pending`), each its first allowed value."""
    values = {}
    for p in document["paths"][path]["get"].get("parameters", []):
        if p["in"] == "query" and p.get("required"):
            schema = p.get("schema", {})
            values[p["name"]] = str(schema.get("const") or schema.get("enum", ["x"])[0])
    return values


def _concrete(path: str, document: dict[str, Any]) -> str:
    """Path parameters filled with values of their declared shape (a resource that may not exist)."""
    parameters = {
        p["name"]: p.get("schema", {})
        for p in document["paths"][path]["get"].get("parameters", [])
        if p["in"] == "path"
    }

    def value(match: re.Match[str]) -> str:
        schema = parameters.get(match.group(1), {})
        if schema.get("format") == "uuid":
            return str(uuid.uuid4())
        if schema.get("type") == "integer":
            return "1"
        return f"cursor-{uuid.uuid4().hex[:12]}"

    return re.sub(r"\{(\w+)\}", value, path)


async def test_every_list_route_refuses_a_forged_cursor(platform: Platform, merged_openapi: dict[str, Any]) -> None:
    routes = list_routes(merged_openapi)
    assert len(routes) >= 10, routes  # the lists of every service are in the document
    wrong: list[str] = []
    async with platform.client() as client:
        for path in routes:
            for name, cursor in FORGED.items():
                params = {**_required_query(path, merged_openapi), "cursor": cursor}
                response = await client.get(_concrete(path, merged_openapi), params=params)
                problem = response.headers.get("content-type") == "application/problem+json"
                fields = [e.get("field") for e in response.json().get("errors", [])] if problem else []
                if response.status_code != 422 or not problem or "cursor" not in fields:
                    wrong.append(f"{path} ({name}): {response.status_code} {response.text[:120]}")
    assert not wrong, "\n".join(wrong)
