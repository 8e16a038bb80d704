"""One OpenAPI document for partners: the gateway's own operations and every service's, merged.

Each service's document is fetched over the internal network; the merged document is cached only once every
service has answered, so a service that was down at start-up is included as soon as it is back.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import structlog

from kit.client import InternalClient

log = structlog.get_logger("gateway.openapi")

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "The admin key, a partner API key (`rcp_...`), or a customer JWT from `POST /v1/customer-tokens`."
        ),
    }
}
PUBLIC_PREFIXES = ("/s/",)


def merge(own: dict[str, Any], services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged = copy.deepcopy(own)
    paths: dict[str, Any] = merged.setdefault("paths", {})
    schemas: dict[str, Any] = merged.setdefault("components", {}).setdefault("schemas", {})
    tags: list[dict[str, Any]] = merged.setdefault("tags", [])
    for name, document in sorted(services.items()):
        for schema_name, schema in document.get("components", {}).get("schemas", {}).items():
            if schema_name in schemas and schemas[schema_name] != schema:
                # Same name, different shape: keep both, the service's under a qualified name.
                qualified = f"{name.capitalize()}{schema_name}"
                log.warning("openapi.schema_renamed", service=name, schema=schema_name, renamed=qualified)
                document = _rename_ref(document, schema_name, qualified)
                schemas[qualified] = schema
            else:
                schemas[schema_name] = schema
        for path, operations in document.get("paths", {}).items():
            if path in ("/healthz", "/readyz", "/metrics") or path.startswith("/internal/"):
                continue
            paths.setdefault(path, {}).update(operations)
        tags.extend(t for t in document.get("tags", []) if t not in tags)
    merged.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in paths.items():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation and not path.startswith(PUBLIC_PREFIXES):
                operation.setdefault("security", [{"bearer": []}])
    return merged


def _rename_ref(document: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    old_ref, new_ref = f"#/components/schemas/{old}", f"#/components/schemas/{new}"

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (new_ref if k == "$ref" and v == old_ref else walk(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(document)  # type: ignore[no-any-return]


async def fetch_service_documents(clients: dict[str, InternalClient]) -> dict[str, dict[str, Any]]:
    async def fetch(name: str, client: InternalClient) -> tuple[str, dict[str, Any] | None]:
        try:
            response = await client.get("/openapi.json", timeout=2.0)
            response.raise_for_status()
            return name, response.json()
        except Exception as exc:
            log.warning("openapi.service_unavailable", service=name, error=type(exc).__name__)
            return name, None

    results = await asyncio.gather(*(fetch(n, c) for n, c in clients.items()))
    return {name: doc for name, doc in results if doc is not None}
