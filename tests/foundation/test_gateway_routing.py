from tests.conftest import Platform


async def test_unknown_service_path_passes_through_as_problem(platform: Platform) -> None:
    async with platform.client() as client:
        response = await client.get("/v1/points/nothing-here", headers={"X-Request-ID": "trace-me-123"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "trace-me-123"
    assert response.json()["code"] == "not_found"
