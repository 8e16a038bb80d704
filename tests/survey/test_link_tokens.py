"""Survey link tokens an attacker writes by hand: control characters, bytes that are not UTF-8, lone surrogates,
dot segments, huge ones. Each is a 4xx (an HTML page on the public pages), never a 500, and changes nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import INTERNAL_TOKEN, Platform

JUNK = [
    "%00",
    "abc%00def",
    "%0A",
    "%0D%0ASet-Cookie:%20x=1",
    "%7F",
    "%FF",
    "%C0%AF",
    "%ED%A0%80",
    "%E2%80%AE",
    "%F0%9F%98%80",
    "..",
    "%2e%2e",
    "%2F",
    "a%5Cb",
    "A" * 5000,
    "%25",
    "~",
]
CUSTOMER = {"X-Caller-Kind": "customer", "X-Caller-Id": "someone"}


@pytest.fixture
async def survey_service(platform: Platform) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=platform.urls["survey"], headers={"X-Internal-Token": INTERNAL_TOKEN}, timeout=30)


@pytest.mark.parametrize("token", JUNK)
async def test_junk_in_a_link_is_4xx_at_the_service(survey_service: httpx.AsyncClient, token: str) -> None:
    async with survey_service as client:
        for method, path, headers in (
            ("GET", f"/s/{token}", {"X-Caller-Kind": "public"}),
            ("POST", f"/s/{token}", {"X-Caller-Kind": "public"}),
            ("GET", f"/s/{token}/unsubscribe", {"X-Caller-Kind": "public"}),
            ("POST", f"/s/{token}/unsubscribe", {"X-Caller-Kind": "public"}),
            ("GET", f"/v1/survey-invitations/{token}", CUSTOMER),
        ):
            response = await client.request(
                method,
                httpx.URL(client.base_url.join("/")).copy_with(raw_path=path.encode()),
                headers=headers,
                data={"q_x": "1"} if method == "POST" else None,
            )
            assert 400 <= response.status_code < 500, (method, path[:40], response.status_code, response.text[:200])


@pytest.mark.parametrize(
    "token", ["\u0000", "a\u0000b", "\n", "\ud800", "\u202e", "x" * 256, " ", "../../v1/surveys", "%00"]
)
async def test_junk_in_a_response_body_is_4xx(survey_service: httpx.AsyncClient, token: str) -> None:
    body = json.dumps({"token": token, "answers": [{"question_id": "q", "value": 1}]}, ensure_ascii=True)
    async with survey_service as client:
        response = await client.post(
            "/v1/survey-responses", content=body, headers={**CUSTOMER, "Content-Type": "application/json"}
        )
    assert 400 <= response.status_code < 500, (token, response.status_code, response.text[:200])


@pytest.mark.parametrize("token", ["%00", "%0A", "%7F", "%ED%A0%80", "..", "%2e%2e", "A" * 200])
async def test_junk_in_a_link_is_4xx_at_the_gateway(platform: Platform, token: str) -> None:
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as client:
        url = httpx.URL(platform.gateway_url).copy_with(raw_path=f"/s/{token}".encode())
        response = await client.get(url)
    assert 400 <= response.status_code < 500, (token, response.status_code)
