from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import Platform


@pytest.fixture
async def coupon(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """Straight to the coupon service, with room for real concurrency."""
    async with httpx.AsyncClient(
        base_url=platform.urls["coupon"],
        headers={"X-Internal-Token": platform.env["LOYALTY_INTERNAL_TOKEN"]},
        timeout=60,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
    ) as client:
        yield client
