from tests.conftest import Platform


async def test_unknown_service_path_passes_through_as_problem(platform: Platform) -> None:
    async with platform.client() as client:
        response = await client.get("/v1/points/nothing-here", headers={"X-Request-ID": "trace-me-123"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "trace-me-123"
    assert response.json()["code"] == "not_found"


SERVICES = ("coupon", "points", "recommend", "survey")
INTERNAL = ("/internal/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc")


def _operations(app: object) -> set[tuple[str, str]]:
    document = app.openapi()  # type: ignore[attr-defined]
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        if not path.startswith(INTERNAL)
        for method in item
    }


def test_the_route_table_and_the_services_declare_the_same_operations(platform: Platform) -> None:
    """A service operation the table does not declare is unreachable (closed by default, as intended only if
    deliberate); a table entry no service serves would be a dead door. Both lists must agree exactly."""
    import importlib

    from gateway.routing import ROUTES

    for name in SERVICES:
        served = _operations(importlib.import_module(f"{name}.app").create_app())
        declared = {(route.method, route.template) for route in ROUTES if route.target == name}
        assert served == declared, name
    from gateway.app import create_app

    own = _operations(create_app())
    declared_own = {(r.method, r.template) for r in ROUTES if r.target == "gateway" and r.template.startswith("/v1/")}
    assert own == declared_own


def test_canonical_paths() -> None:
    import pytest

    from gateway.routing import InvalidPath, canonical_path

    assert canonical_path(b"/v1/customers/a%2Db/points") == "/v1/customers/a-b/points"
    for bad in (b"/v1/../x", b"/v1/%2e%2e/x", b"/v1//x", b"/v1/x/", b"/v1/a%2fb", b"/v1/a%5cb", b"/v1/a%252e", b"v1"):
        with pytest.raises(InvalidPath):
            canonical_path(bad)
