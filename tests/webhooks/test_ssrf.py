"""The SSRF guard: webhook URLs reach public addresses only (unless WEBHOOK_ALLOW_PRIVATE=true), checked at
registration and again at every delivery, including addresses reached through DNS; no redirect is followed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.webhooks.ssrf import check_url
from tests.conftest import Platform
from tests.webhooks.conftest import OWN_GATEWAY, EndpointFactory, gateway_app
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_delivery import sample, send_event

Receivers = Callable[..., Awaitable[Receiver]]

REFUSED = [
    "http://127.0.0.1/hooks",
    "http://localhost:9000/hooks",  # through DNS (/etc/hosts): a name for a loopback address
    "http://10.1.2.3/hooks",
    "http://172.16.0.1/hooks",
    "http://192.168.1.10/hooks",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://100.64.0.1/hooks",
    "http://0.0.0.0/hooks",
    "http://[::1]/hooks",
    "http://[::ffff:127.0.0.1]/hooks",
    "http://[fe80::1]/hooks",
    "http://[fd00:ec2::254]/hooks",
    "http://2130706433/hooks",  # 127.0.0.1 as one decimal number
    "http://127.1/hooks",
    "http://does-not-resolve.invalid/hooks",
    "gopher://93.184.216.34/x",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_private_and_unresolvable_urls_are_refused(url: str) -> None:
    assert await check_url(url, allow_private=False) is not None


async def test_public_addresses_pass_and_private_ones_pass_when_allowed() -> None:
    assert await check_url("https://93.184.216.34/hooks", allow_private=False) is None
    assert await check_url("https://[2606:2800:220:1::]/hooks", allow_private=False) is None
    assert await check_url("http://localhost:9000/hooks", allow_private=True) is None


@pytest.mark.own_platform(services=["gateway"], env={"WEBHOOK_ALLOW_PRIVATE": "false"})  # as deployed by default
async def test_registration_refuses_a_private_address_also_through_dns(admin: httpx.AsyncClient) -> None:
    for url in ("http://127.0.0.1:9/hooks", "http://localhost:9/hooks", "http://169.254.169.254/hooks"):
        response = await admin.post("/v1/webhook-endpoints", json={"url": url, "events": ["points.earned"]})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["errors"][0]["field"] == "url"
    created = await admin.post(
        "/v1/webhook-endpoints", json={"url": "https://93.184.216.34/hooks", "events": ["points.earned"]}
    )
    assert created.status_code == 201
    registered = await admin.post(
        "/v1/webhook-endpoints", json={"url": "https://93.184.216.34/hooks", "events": ["points.earned"]}
    )
    changed = await admin.patch(
        f"/v1/webhook-endpoints/{registered.json()['id']}", json={"url": "http://localhost:9/hooks"}
    )
    assert changed.status_code == 422


@OWN_GATEWAY
async def test_every_delivery_checks_the_address_again(
    platform: Platform, admin: httpx.AsyncClient, receivers: Receivers, endpoints: EndpointFactory
) -> None:
    """Registered while private addresses were allowed (as if DNS had pointed elsewhere then): when the
    delivery comes, the name resolves to loopback and nothing is sent."""
    by_name = await receivers()
    by_address = await receivers()
    named = await endpoints(by_name.url.replace("127.0.0.1", "localhost"), ["points.earned"])
    literal = await endpoints(by_address.url, ["points.earned"])
    dispatcher = gateway_app(platform).state.webhooks  # this platform's own: nothing to restore
    dispatcher.allow_private = False
    await dispatcher.aclose()  # its next client resolves through a guard that refuses private addresses
    await send_event(platform, "points.earned", sample("points.earned"))
    for endpoint in (named, literal):
        attempt = await first_attempt(admin, endpoint["id"])
        assert attempt["status_code"] is None and attempt["error"].startswith("blocked"), attempt
    assert by_name.received == [] and by_address.received == []


@OWN_GATEWAY
async def test_redirects_are_not_followed(
    platform: Platform, admin: httpx.AsyncClient, receivers: Receivers, endpoints: EndpointFactory
) -> None:
    target = await receivers()
    redirecting = await receivers(status=307, reply_headers={"Location": target.url})
    endpoint = await endpoints(redirecting.url, ["coupon.redeemed"])
    await send_event(platform, "coupon.redeemed", sample("coupon.redeemed"))
    attempt = await first_attempt(admin, endpoint["id"])
    assert attempt["status_code"] == 307 and "redirects are not followed" in attempt["error"]
    await asyncio.sleep(0.3)
    assert target.received == []


async def first_attempt(admin: httpx.AsyncClient, endpoint_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        items = (await admin.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries")).json()["items"]
        if items and items[0]["attempt_log"]:
            return items[0]["attempt_log"][0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.1)
