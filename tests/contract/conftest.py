"""Fixtures for the partner-facing contract: the merged OpenAPI document as the gateway serves it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Platform


@pytest.fixture(scope="session")
async def merged_openapi(session_platform: Platform, artifacts: Path) -> dict[str, Any]:
    """The gateway's /openapi.json, also saved as test-artifacts/openapi.json for a look by hand."""
    async with session_platform.client(None) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    (artifacts / "openapi.json").write_text(json.dumps(document, indent=2, sort_keys=True))
    return document


@pytest.fixture(scope="session")
def merged_openapi_path(merged_openapi: dict[str, Any], artifacts: Path) -> Path:
    return artifacts / "openapi.json"
