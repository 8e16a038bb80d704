"""The console's tests: a signed-in console client over real HTTP, and the form tokens read from its pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import ADMIN_KEY, Platform

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await client.get("/console/login")
    return await client.post("/console/login", data={"key": key, "csrf": csrf_of(form.text), "next": "/console/"})


def browser_client(platform: Platform) -> httpx.AsyncClient:
    """A client that behaves like a browser on the console: cookies kept, no bearer token, same-origin posts."""
    return httpx.AsyncClient(base_url=platform.gateway_url, timeout=30, headers={"Origin": platform.gateway_url})


@pytest.fixture
async def console(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with browser_client(platform) as client:
        assert (await sign_in(client, ADMIN_KEY)).status_code == 303
        yield client
