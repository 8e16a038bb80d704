"""merge() on small documents: what a partner's generated client and schemathesis rely on."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from gateway import openapi
from gateway.openapi import merge


@pytest.fixture(autouse=True)
def uncached_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """kit.logging caches a logger on its first use: once an earlier test served /openapi.json, the module's
    logger would write past `capture_logs`. A fresh one binds to what is configured when it is first used."""
    monkeypatch.setattr(openapi, "log", structlog.get_logger("gateway.openapi"))


PROBLEM = {"$ref": "#/components/schemas/Problem"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document(paths: dict[str, Any], schemas: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas or {}},
    }


def own() -> dict[str, Any]:
    return document(
        {
            "/v1/purchases": {
                "post": {
                    "operationId": "create_purchase",
                    "requestBody": {"content": {"application/json": {"schema": ref("PurchaseCreate")}}},
                    "responses": {"202": json_response(ref("Accepted"))},
                }
            },
            "/healthz": {"get": {"operationId": "healthz", "responses": {"200": json_response({})}}},
        },
        {
            "PurchaseCreate": {"type": "object", "properties": {"purchase_id": {"type": "string"}}},
            "Accepted": {"type": "object", "properties": {"status": {"type": "string"}}},
        },
    )


def points() -> dict[str, Any]:
    return document(
        {
            "/v1/customers/{customer_id}/points": {
                "get": {
                    "operationId": "get_points_balance",
                    "parameters": [
                        {"name": "customer_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": json_response(ref("Balance")),
                        "422": json_response(ref("HTTPValidationError"), "Validation Error"),
                    },
                }
            },
            "/v1/points/rules": {
                "get": {"operationId": "get_rules", "responses": {"200": json_response(ref("Rules"))}}
            },
            "/internal/events": {"post": {"operationId": "receive_event", "responses": {"200": json_response({})}}},
            "/metrics": {"get": {"operationId": "metrics", "responses": {"200": json_response({})}}},
        },
        {
            "Balance": {"type": "object", "properties": {"balance": {"type": "integer"}, "tier": ref("Tier")}},
            "Tier": {"type": "object", "properties": {"name": {"type": "string"}}},
            "Rules": {"type": "object", "properties": {"points_per_currency_unit": {"type": "integer"}}},
            "HTTPValidationError": {"type": "object", "properties": {"detail": {"type": "array"}}},
            "Unused": {"type": "object"},
        },
    )


def coupon() -> dict[str, Any]:
    return document(
        {
            "/v1/customers/{customer_id}/coupons": {
                "get": {
                    "operationId": "get_rules",  # clashes with points' operation
                    "responses": {"200": json_response(ref("Balance"))},
                }
            },
            "/v1/coupon-rules": {
                "get": {
                    "operationId": "list_coupon_rules",
                    "responses": {"200": json_response({"type": "array", "items": ref("Tier")})},
                }
            },
            "/v1/not-routed": {"get": {"operationId": "nowhere", "responses": {"200": json_response({})}}},
        },
        {
            # Same name as points' Balance, another shape; Tier is the same shape (title aside).
            "Balance": {"type": "object", "properties": {"coupons": {"type": "array", "items": ref("Tier")}}},
            "Tier": {"title": "Tier", "type": "object", "properties": {"name": {"type": "string"}}},
        },
    )


def survey() -> dict[str, Any]:
    return document(
        {
            "/s/{token}": {
                "get": {
                    "operationId": "show_survey_page",
                    "responses": {
                        "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
                    },
                }
            }
        }
    )


def operations(merged: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method): op for path, item in merged["paths"].items() for method, op in item.items()}


@pytest.fixture
def merged() -> dict[str, Any]:
    return merge(own(), {"points": points(), "coupon": coupon(), "survey": survey()})


def test_paths_of_every_document_are_merged_and_internal_ones_dropped(merged: dict[str, Any]) -> None:
    assert set(merged["paths"]) == {
        "/v1/purchases",
        "/v1/customers/{customer_id}/points",
        "/v1/points/rules",
        "/v1/customers/{customer_id}/coupons",
        "/v1/coupon-rules",
        "/s/{token}",
    }
    assert merged["openapi"] == "3.1.0"


def test_a_path_the_gateway_does_not_route_to_the_service_is_dropped_and_logged() -> None:
    with capture_logs() as logs:
        merged = merge(own(), {"coupon": coupon()})
    assert "/v1/not-routed" not in merged["paths"]
    assert {"event": "openapi.operation_undeclared", "service": "coupon", "path": "/v1/not-routed"} in [
        {k: v for k, v in e.items() if k in ("event", "service", "path")} for e in logs
    ]


def test_schemas_of_one_name_and_different_shapes_are_both_kept_under_distinct_names(merged: dict[str, Any]) -> None:
    schemas = merged["components"]["schemas"]
    # coupon comes first in name order and keeps the plain name; points' Balance is qualified.
    assert schemas["Balance"]["properties"] == {"coupons": {"type": "array", "items": ref("Tier")}}
    assert schemas["PointsBalance"]["properties"]["balance"] == {"type": "integer"}
    ops = operations(merged)
    assert ops["/v1/customers/{customer_id}/points", "get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == ref("PointsBalance")
    assert ops["/v1/customers/{customer_id}/coupons", "get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == ref("Balance")
    # The same shape under one name stays one schema.
    assert "PointsTier" not in schemas and "CouponTier" not in schemas
    assert schemas["PointsBalance"]["properties"]["tier"] == ref("Tier")


def test_every_ref_resolves_and_unreferenced_schemas_are_dropped(merged: dict[str, Any]) -> None:
    schemas = merged["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    names = {r.rsplit("/", 1)[1] for r in refs(merged)}
    assert names <= set(schemas)
    assert "Unused" not in schemas
    assert "HTTPValidationError" not in schemas


def test_a_renamed_schema_does_not_take_a_name_already_used() -> None:
    taken = coupon()
    taken["components"]["schemas"]["PointsBalance"] = {"type": "string"}
    taken["paths"]["/v1/coupon-rules"]["get"]["responses"]["200"] = json_response(ref("PointsBalance"))
    merged = merge(own(), {"points": points(), "coupon": taken})
    schemas = merged["components"]["schemas"]
    assert schemas["PointsBalance"] == {"type": "string", "title": "PointsBalance"}
    assert schemas["PointsBalance2"]["properties"]["balance"] == {"type": "integer"}


def test_bearer_is_declared_and_required_everywhere_but_the_public_pages(merged: dict[str, Any]) -> None:
    bearer = merged["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert merged["security"] == [{"bearer": []}]
    for (path, _), operation in operations(merged).items():
        expected: list[dict[str, list[str]]] = [] if path.startswith("/s/") else [{"bearer": []}]
        assert operation["security"] == expected, path


def test_operation_ids_are_unique_and_a_clash_is_renamed_deterministically_and_logged() -> None:
    with capture_logs() as logs:
        merged = merge(own(), {"points": points(), "coupon": coupon(), "survey": survey()})
    ids = [op["operationId"] for op in operations(merged).values()]
    assert len(ids) == len(set(ids))
    ops = operations(merged)
    # coupon's operation is met first (services in name order) and keeps the id.
    assert ops["/v1/customers/{customer_id}/coupons", "get"]["operationId"] == "get_rules"
    assert ops["/v1/points/rules", "get"]["operationId"] == "points_get_rules"
    assert any(e["event"] == "openapi.operation_id_renamed" and e["renamed"] == "points_get_rules" for e in logs)
    again = merge(own(), {"survey": survey(), "coupon": coupon(), "points": points()})
    assert again == merged


def test_an_operation_without_an_id_gets_one() -> None:
    bare = points()
    del bare["paths"]["/v1/points/rules"]["get"]["operationId"]
    merged = merge(own(), {"points": bare})
    assert merged["paths"]["/v1/points/rules"]["get"]["operationId"] == "get_v1_points_rules"


def test_authenticated_operations_list_the_gateway_problems(merged: dict[str, Any]) -> None:
    ops = operations(merged)
    for key in [("/v1/points/rules", "get"), ("/v1/purchases", "post"), ("/v1/customers/{customer_id}/points", "get")]:
        responses = ops[key]["responses"]
        for status in ("401", "403", "429", "503"):
            assert responses[status]["content"] == {"application/problem+json": {"schema": PROBLEM}}, (key, status)
    assert "Retry-After" in ops["/v1/points/rules", "get"]["responses"]["429"]["headers"]
    # Input (a body or parameters) can be refused with 422; no input, no 422.
    assert "422" in ops["/v1/purchases", "post"]["responses"]
    assert "422" in ops["/v1/customers/{customer_id}/points", "get"]["responses"]
    assert "422" not in ops["/v1/points/rules", "get"]["responses"]
    # Forwarded operations may time out at the gateway; its own do not forward.
    assert "504" in ops["/v1/points/rules", "get"]["responses"]
    assert "504" not in ops["/v1/purchases", "post"]["responses"]
    # The public pages are not authenticated: no 401/403 added.
    assert "401" not in ops["/s/{token}", "get"]["responses"]


def test_fastapi_validation_error_is_replaced_by_the_problem_really_answered(merged: dict[str, Any]) -> None:
    response = merged["paths"]["/v1/customers/{customer_id}/points"]["get"]["responses"]["422"]
    assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}
    assert "Problem" in merged["components"]["schemas"]


def test_posts_document_the_idempotency_key(merged: dict[str, Any]) -> None:
    post = merged["paths"]["/v1/purchases"]["post"]
    assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
    assert "409" in post["responses"]
    get = merged["paths"]["/v1/points/rules"]["get"]
    assert "parameters" not in get


def test_inputs_are_not_modified() -> None:
    gateway, services = own(), {"points": points(), "coupon": coupon()}
    before = copy.deepcopy((gateway, services))
    merge(gateway, services)
    assert (gateway, services) == before


def test_a_body_is_a_400_when_malformed_and_raw_bodies_are_binary() -> None:
    raw = points()
    raw["paths"]["/v1/points/rules"]["put"] = {
        "operationId": "import_rules",
        "requestBody": {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            }
        },
        "responses": {"200": json_response({})},
    }
    merged = merge(own(), {"points": raw})
    post = merged["paths"]["/v1/points/rules"]["put"]
    # Media types in name order: openapi-python-client sends a file body as the last one listed.
    assert list(post["requestBody"]["content"]) == ["application/x-ndjson", "text/csv"]
    assert post["requestBody"]["content"]["text/csv"]["schema"] == {"type": "string", "format": "binary"}
    assert "400" in post["responses"] and "400" in merged["paths"]["/v1/purchases"]["post"]["responses"]
    assert "400" not in merged["paths"]["/v1/points/rules"]["get"]["responses"]


def test_every_schema_is_titled_with_its_component_name(merged: dict[str, Any]) -> None:
    # Generators name classes after titles; two schemas with one title would collide.
    assert all(schema["title"] == name for name, schema in merged["components"]["schemas"].items())
