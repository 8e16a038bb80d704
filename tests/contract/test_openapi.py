"""The merged OpenAPI document the gateway serves to partners, checked as a whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest

from tests.conftest import Platform

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PROBLEM = {"$ref": "#/components/schemas/Problem"}
AUTH_PROBLEMS = ("401", "403", "429", "503")


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_the_document_is_valid_openapi_3_1(merged_openapi: dict[str, Any]) -> None:
    assert merged_openapi["openapi"].startswith("3.1.")
    try:
        from openapi_spec_validator import validate
    except ImportError:
        # Not installed here: the OpenAPI 3.1 meta-schema schemathesis ships, plus each schema against JSON Schema.
        from schemathesis.specs.openapi.definitions import OPENAPI_31

        errors = [
            f"{e.instance_path}: {e.message}"
            for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(merged_openapi)
        ]
        assert errors == []
        for name, schema in merged_openapi["components"]["schemas"].items():
            jsonschema_rs.meta.validate(schema)  # raises with the schema's name in the traceback
            assert name
    else:
        validate(merged_openapi)


def test_every_ref_resolves(merged_openapi: dict[str, Any]) -> None:
    schemas = merged_openapi["components"]["schemas"]
    unresolved = {
        r
        for r in refs(merged_openapi)
        if not (r.startswith("#/components/schemas/") and r.rsplit("/", 1)[1] in schemas)
    }
    assert unresolved == set()


def test_internal_paths_are_not_published(merged_openapi: dict[str, Any]) -> None:
    for path in merged_openapi["paths"]:
        assert not path.startswith("/internal/"), path
        assert path not in ("/healthz", "/readyz", "/metrics", "/openapi.json")


def test_every_operation_has_a_unique_operation_id(merged_openapi: dict[str, Any]) -> None:
    ids = [op.get("operationId") for _, _, op in operations(merged_openapi)]
    assert None not in ids
    assert [i for i, n in Counter(ids).items() if n > 1] == []


def test_bearer_is_declared_and_required_by_every_operation_but_the_public_pages(
    merged_openapi: dict[str, Any],
) -> None:
    scheme = merged_openapi["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, method, operation in operations(merged_openapi):
        if path.startswith("/s/"):
            assert operation["security"] == [], (method, path)
        else:
            assert operation["security"] == [{"bearer": []}], (method, path)


def test_every_error_answer_is_a_problem(merged_openapi: dict[str, Any]) -> None:
    for path, method, operation in operations(merged_openapi):
        responses = operation["responses"]
        if path.startswith("/s/"):
            continue
        for status in AUTH_PROBLEMS:
            assert status in responses, (method, path, status)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in responses, (method, path)
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}, (method, path, status)


async def test_every_public_path_of_every_service_is_published(
    platform: Platform, merged_openapi: dict[str, Any]
) -> None:
    """A path a service serves but the gateway does not route would be dropped from the document (and answer 404
    at the gateway): that is a routing defect, shown here."""
    services = [name for name in platform.servers if name != "gateway"]
    if not services:
        pytest.skip("no service served (RECIPROCITY_TEST_SERVICES)")
    missing = []
    for name in services:
        async with platform.service_client(name) as client:
            document = (await client.get("/openapi.json")).json()
        for path, method, _ in operations(document):
            if path.startswith("/internal/") or path in ("/healthz", "/readyz", "/metrics"):
                continue
            if method not in merged_openapi["paths"].get(path, {}):
                missing.append((name, method.upper(), path))
    assert missing == []


async def test_the_gateway_publishes_its_own_operations(merged_openapi: dict[str, Any]) -> None:
    ids = {op["operationId"] for _, _, op in operations(merged_openapi)}
    assert {"create_purchase", "get_purchase", "create_refund", "get_customer_overview", "create_api_key"} <= ids
