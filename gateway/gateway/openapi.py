"""One OpenAPI document for partners: the gateway's own operations and every service's, merged.

Each service's document is fetched over the internal network; the merged document is cached only once every
service has answered, so a service that was down at start-up is included as soon as it is back.

The merge makes the document describe what a caller of the gateway actually meets, so that a generated client
and a property-based tester can rely on it:

- only public paths: internal ones (`/internal/*`, health, metrics) are dropped, and so is a service path the
  gateway does not route to that service (it would answer 404 there);
- one schema namespace: a schema name two documents define differently is qualified with the service's name
  (`PointsBalance`), and that service's `$ref`s are rewritten;
- the `bearer` security scheme, required by every operation except the public survey pages under `/s/`;
- one `operationId` per operation, unique across the document (a clash is renamed deterministically, logged);
- the problem+json answers the gateway itself may give (401, 403, 429, 503, 504 when forwarding, 422 for
  operations with input, 404 on a customer's resources, 409/422 for a reused `Idempotency-Key`), and FastAPI's
  default `HTTPValidationError` replaced by the `Problem` every process really answers with.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Iterator
from typing import Any

import structlog

from gateway.routing import declared_route
from kit.app import PROBLEM_SCHEMA
from kit.client import UpstreamError, Upstreams

__all__ = ["SECURITY_SCHEMES", "fetch_service_documents", "merge"]

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
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
INTERNAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
INTERNAL_PREFIXES = ("/internal/",)
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PROBLEM_REF = "#/components/schemas/Problem"
PROBLEM_CONTENT_TYPE = "application/problem+json"
SCHEMA_PREFIX = "#/components/schemas/"
FORM_MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
# FastAPI's default 422 body; no process answers with it (the kit renders validation errors as problems).
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}}
}
# status -> (description, headers), added by the gateway to every authenticated operation.
GATEWAY_PROBLEMS: dict[str, tuple[str, dict[str, Any]]] = {
    "401": ("Missing or invalid bearer token.", {}),
    "403": ("The token lacks the scope this operation needs, or a customer token cannot call it.", {}),
    "429": ("Rate limit exceeded for this caller.", _RETRY_AFTER),
    "503": ("The service behind this operation is unavailable.", _RETRY_AFTER),
}
FORWARDED_PROBLEMS: dict[str, tuple[str, dict[str, Any]]] = {
    "504": ("The service behind this operation did not answer in time.", {}),
}
IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: the same key with the same body replays the first response (header "
        "`Idempotent-Replayed: true`); with another body it is 422 `idempotency_key_reused`; while the first "
        "request still runs, 409 `idempotency_key_in_use`. Kept at least 24 hours, scoped to the caller and route."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def merge(own: dict[str, Any], services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The gateway's document `own` with every service's (name -> its /openapi.json) merged in."""
    merged = copy.deepcopy(own)
    merged["openapi"] = "3.1.0"
    components: dict[str, Any] = merged.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    paths: dict[str, Any] = {}
    origin: dict[str, str] = {}  # path -> "gateway" or the service that owns it
    tags: list[dict[str, Any]] = list(merged.get("tags") or [])

    for path, item in (own.get("paths") or {}).items():
        if _is_internal(path):
            continue
        declared = {
            method: operation
            for method, operation in item.items()
            if method not in HTTP_METHODS or _declared_for(method, path, "gateway")
        }
        if any(method in HTTP_METHODS for method in declared):
            paths[path] = copy.deepcopy(declared)
            origin[path] = "gateway"

    for name, original in sorted(services.items()):
        document = copy.deepcopy(original)
        document = _adopt_schemas(name, document, schemas)
        for path, item in (document.get("paths") or {}).items():
            if _is_internal(path):
                continue
            target = paths.setdefault(path, {})
            origin.setdefault(path, name)
            for method, operation in item.items():
                if method in HTTP_METHODS and not _declared_for(method, path, name):
                    log.warning("openapi.operation_undeclared", service=name, path=path, method=method)
                    continue
                if method in target:
                    log.warning("openapi.operation_duplicate", service=name, path=path, method=method)
                    continue
                target[method] = operation
        known = {t.get("name") for t in tags}
        for tag in document.get("tags") or []:
            if tag.get("name") not in known:
                tags.append(tag)
                known.add(tag.get("name"))

    merged["paths"] = dict(sorted((p, item) for p, item in paths.items() if item))
    schemas.setdefault("Problem", copy.deepcopy(PROBLEM_SCHEMA))
    for path, method, operation in _operations(merged["paths"]):
        _complete_operation(path, method, operation, forwarded=origin[path] != "gateway")
    _unique_operation_ids(merged["paths"], origin)

    components["securitySchemes"] = {**(components.get("securitySchemes") or {}), **SECURITY_SCHEMES}
    merged["security"] = BEARER
    if tags:
        merged["tags"] = sorted(tags, key=lambda t: str(t.get("name")))
    components["schemas"] = _referenced_schemas(merged)
    for schema_name, schema in components["schemas"].items():
        if isinstance(schema, dict):
            # Generators name classes after the title: FastAPI gives `Tier-Input` and `Tier-Output` one title,
            # and a qualified schema keeps its service's; the component name is the one unique name.
            schema["title"] = schema_name
    return merged


def _is_internal(path: str) -> bool:
    return path in INTERNAL_PATHS or path.startswith(INTERNAL_PREFIXES)


def _declared_for(method: str, path: str, target: str) -> bool:
    """Only what the route table declares reaches a caller of the gateway: anything else would be a 404."""
    route = declared_route(method.upper(), path)
    return route is not None and route.target == target


def _operations(paths: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in paths.items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                yield path, method, operation


def _adopt_schemas(service: str, document: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Adds the service's schemas to `schemas`; a name already taken by another shape is qualified with the
    service's name, and the service's document (its own schemas included) is rewritten to point at it."""
    own = (document.get("components") or {}).get("schemas") or {}
    renames: dict[str, str] = {}
    for schema_name, schema in own.items():
        if schema_name in schemas and not _same_schema(schemas[schema_name], schema):
            qualified = _qualified_name(service, schema_name, schemas, own)
            log.warning("openapi.schema_renamed", service=service, schema=schema_name, renamed=qualified)
            renames[schema_name] = qualified
    if renames:
        document = _rewrite_refs(document, renames)
        own = document["components"]["schemas"]
    for schema_name, schema in own.items():
        schemas.setdefault(renames.get(schema_name, schema_name), schema)
    return document


def _same_schema(a: Any, b: Any) -> bool:
    # `title` is cosmetic; two shapes that differ only in it are one schema.
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return bool(strip(a) == strip(b))


def _qualified_name(service: str, schema_name: str, schemas: dict[str, Any], own: dict[str, Any]) -> str:
    base = f"{service[:1].upper()}{service[1:]}{schema_name}"
    candidate, n = base, 2
    while candidate in schemas or candidate in own:
        candidate, n = f"{base}{n}", n + 1
    return candidate


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(SCHEMA_PREFIX):
                name = value[len(SCHEMA_PREFIX) :]
                out[key] = SCHEMA_PREFIX + renames.get(name, name)
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }
    if headers:
        response["headers"] = copy.deepcopy(headers)
    return response


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    for media in (response.get("content") or {}).values():
        ref = (media.get("schema") or {}).get("$ref", "")
        if ref in (SCHEMA_PREFIX + n for n in FASTAPI_VALIDATION_SCHEMAS):
            return True
    return False


def _complete_operation(path: str, method: str, operation: dict[str, Any], *, forwarded: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, response in list(responses.items()):
        if isinstance(response, dict) and _is_fastapi_validation(response):
            responses[status] = _problem("The request is not valid.")
    _raw_bodies_as_binary(operation)
    route = declared_route(method.upper(), path)
    front_door: dict[str, tuple[str, dict[str, Any]]] = {}
    if "{" in path:
        front_door["400"] = ("The path is not canonical (dot or empty segments, encoded separators).", {})
    if "requestBody" in operation:
        front_door["413"] = ("The body is larger than this operation accepts.", {})
    if route is not None and route.access.public:
        operation["security"] = []
        for status, (description, headers) in front_door.items():
            responses.setdefault(status, _problem(description, headers))
        operation["responses"] = dict(sorted(responses.items()))
        return
    operation["security"] = copy.deepcopy(BEARER)
    added = {**GATEWAY_PROBLEMS, **front_door}
    if forwarded:
        added.update(FORWARDED_PROBLEMS)
    parameters: list[dict[str, Any]] = operation.setdefault("parameters", [])
    if method == "post" and not any(
        p.get("in") == "header" and str(p.get("name", "")).lower() == "idempotency-key" for p in parameters
    ):
        parameters.append(copy.deepcopy(IDEMPOTENCY_KEY_PARAMETER))
    if method == "post":
        added["409"] = ("Conflict, or a request with this Idempotency-Key is still running.", _RETRY_AFTER)
    if parameters or "requestBody" in operation:
        added["422"] = ("The request is not valid.", {})
    if "requestBody" in operation:
        added["400"] = ("The body could not be read as the declared content type (malformed JSON).", {})
    if "{customer_id}" in path:
        # A customer token asking for another customer's resources.
        added["404"] = ("Not found.", {})
    for status, (description, headers) in added.items():
        if status not in responses:
            responses[status] = _problem(description, headers)
    if not parameters:
        del operation["parameters"]
    operation["responses"] = dict(sorted(responses.items()))


def _raw_bodies_as_binary(operation: dict[str, Any]) -> None:
    """A body in a media type that is neither JSON nor a form (CSV, JSON lines) is a byte stream: saying so
    (`format: binary`) lets a generator pass a file through instead of failing on a string it cannot encode.

    Media types are put in name order: openapi-python-client sends a file body as the last one listed."""
    body = operation.get("requestBody") or {}
    if "content" in body:
        body["content"] = dict(sorted(body["content"].items()))
    for media_type, media in (body.get("content") or {}).items():
        schema = media.get("schema")
        if media_type in FORM_MEDIA_TYPES or _is_json(media_type) or not isinstance(schema, dict):
            continue
        if schema.get("type") == "string" and "format" not in schema:
            schema["format"] = "binary"


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _unique_operation_ids(paths: dict[str, Any], origin: dict[str, str]) -> None:
    """The first operation (gateway first, then by path and method) keeps its id; a later clash is qualified
    with its service's name, then numbered."""
    seen: set[str] = set()
    ordered = sorted(
        _operations(paths),
        key=lambda t: (origin[t[0]] != "gateway", origin[t[0]], t[0], HTTP_METHODS.index(t[1])),
    )
    for path, method, operation in ordered:
        wanted = operation.get("operationId") or _operation_id_from(method, path)
        candidate = wanted
        if candidate in seen:
            candidate = f"{origin[path]}_{wanted}"
            n = 2
            while candidate in seen:
                candidate, n = f"{origin[path]}_{wanted}_{n}", n + 1
            log.warning(
                "openapi.operation_id_renamed", path=path, method=method, operation_id=wanted, renamed=candidate
            )
        seen.add(candidate)
        operation["operationId"] = candidate


def _operation_id_from(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_").lower()
    return f"{method}_{words}" if words else method


def _referenced_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """The schemas some path reaches (through any chain of `$ref`s), in name order: dropping internal paths
    and FastAPI's validation error leaves schemas no public operation uses."""
    schemas: dict[str, Any] = document["components"]["schemas"]
    reached: set[str] = set()
    pending = list(_refs(document.get("paths")))
    pending += list(_refs({k: v for k, v in document["components"].items() if k != "schemas"}))
    while pending:
        name = pending.pop()
        if name in reached or name not in schemas:
            continue
        reached.add(name)
        pending.extend(_refs(schemas[name]))
    return {name: schemas[name] for name in sorted(reached)}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(SCHEMA_PREFIX):
                yield value[len(SCHEMA_PREFIX) :]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


async def fetch_service_documents(upstreams: Upstreams) -> dict[str, dict[str, Any]]:
    """Each service's /openapi.json; a service that does not answer is left out (and logged)."""

    async def fetch(name: str) -> tuple[str, dict[str, Any] | None]:
        try:
            response = await upstreams.call(name, "GET", "/openapi.json", timeout=2.0)
            if response.status != 200:
                raise UpstreamError(f"HTTP {response.status}")
            return name, response.json()
        except Exception as exc:
            log.warning("openapi.service_unavailable", service=name, error=type(exc).__name__)
            return name, None

    results = await asyncio.gather(*(fetch(name) for name in upstreams.urls))
    return {name: doc for name, doc in results if doc is not None}
