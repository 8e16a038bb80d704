"""Structured logs: with LOG_FORMAT=json every line is a JSON object, and a request's lines carry its id."""

import json
from uuid import uuid4

import httpx
import pytest

from tests.conftest import ARTIFACTS, INTERNAL_TOKEN, Platform
from tests.support.servers import ServiceProcess, free_port

pytestmark = pytest.mark.slow


async def test_json_log_lines_carry_the_request_id(platform: Platform) -> None:
    log_path = ARTIFACTS / "logs" / f"json-{uuid4().hex[:6]}.log"
    env = {**platform.env, "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}
    process = ServiceProcess("points", free_port(), env, log_path).start()
    request_id = f"log-{uuid4().hex}"
    try:
        await process.wait_ready()
        async with httpx.AsyncClient(base_url=process.url) as client:
            response = await client.get(
                "/v1/customers/c1/points", headers={"X-Internal-Token": INTERNAL_TOKEN, "X-Request-ID": request_id}
            )
        assert response.status_code == 200
    finally:
        process.stop()
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    mine = [r for r in records if r.get("request_id") == request_id]
    assert any(r["event"] == "http.request" and r["status"] == 200 for r in mine)
    assert all(r["service"] == "points" and "timestamp" in r and "level" in r for r in mine)
