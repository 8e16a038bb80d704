"""The experiments and webhook pages over real HTTP, signed in as the admin: each form reaches the gateway's own
operation and what it made is there in the API afterwards."""

from __future__ import annotations

import re

import httpx

from tests.conftest import Platform
from tests.console.conftest import browser_client, csrf_of, sign_in


async def test_an_experiment_started_read_and_stopped_from_the_console(
    console: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    campaign = await admin.post(
        "/v1/coupon-campaigns", json={"name": "console-exp", "discount": {"type": "percent", "value": "5"}}
    )
    rule = await admin.post(
        "/v1/coupon-rules", json={"campaign_id": campaign.json()["id"], "trigger": {"type": "nth_purchase", "n": 9}}
    )
    page = await console.get("/console/experiments")
    started = await console.post(
        "/console/experiments",
        data={
            "csrf": csrf_of(page.text),
            "name": "Console: ninth purchase",
            "lever_type": "coupon_rule",
            "lever_id": rule.json()["id"],
            "holdout_percent": "20",
        },
    )
    assert started.status_code == 303, started.text
    location = started.headers["location"]
    experiment_id = re.search(r"/console/experiments/([0-9a-f-]{36})", location).group(1)  # type: ignore[union-attr]
    shown = await console.get(location)
    assert shown.status_code == 200 and "Console: ninth purchase" in shown.text and "20%" in shown.text
    assert (await admin.get(f"/v1/experiments/{experiment_id}")).json()["status"] == "running"

    stopped = await console.post(f"/console/experiments/{experiment_id}", data={"csrf": csrf_of(shown.text)})
    assert stopped.status_code == 303
    assert (await admin.get(f"/v1/experiments/{experiment_id}")).json()["status"] == "stopped"
    assert "Stop the experiment" not in (await console.get(f"/console/experiments/{experiment_id}")).text


async def test_a_webhook_endpoint_added_shown_once_and_disabled_from_the_console(
    console: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    page = await console.get("/console/webhooks")
    added = await console.post(
        "/console/webhooks",
        data={
            "csrf": csrf_of(page.text),
            "url": "http://127.0.0.1:9/console-hook",
            "events": ["purchase.accepted"],
            "description": "from the console",
        },
    )
    assert added.status_code == 201, added.text
    secret = re.search(r"<code>(whsec_[^<]+)</code>", added.text)
    assert secret, "the secret is shown once"
    listed = (await admin.get("/v1/webhook-endpoints", params={"limit": 200})).json()["items"]
    endpoint = next(e for e in listed if e["url"] == "http://127.0.0.1:9/console-hook")
    assert endpoint["events"] == ["purchase.accepted"]
    shown = await console.get(f"/console/webhooks/{endpoint['id']}")
    assert shown.status_code == 200 and "Delivery log" in shown.text and secret.group(1) not in shown.text

    disabled = await console.post(
        f"/console/webhooks/{endpoint['id']}", data={"csrf": csrf_of(shown.text), "action": "disable"}
    )
    assert disabled.status_code == 303
    assert (await admin.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()["active"] is False


async def test_a_partner_key_without_admin_cannot_reach_the_gateway_operations(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    created = (await admin.post("/v1/api-keys", json={"name": "console exp", "scopes": ["coupons:write"]})).json()
    async with browser_client(platform) as client:
        assert (await sign_in(client, created["key"])).status_code == 303
        page = await client.get("/console/experiments")
        assert page.status_code == 200 and "New experiment" not in page.text and "admin" in page.text
        refused = await client.post(
            "/console/webhooks",
            data={"csrf": csrf_of(page.text), "url": "http://127.0.0.1:9/x", "events": ["purchase.accepted"]},
        )
        assert refused.status_code == 403
    listed = (await admin.get("/v1/webhook-endpoints", params={"limit": 200})).json()["items"]
    assert not any(e["url"] == "http://127.0.0.1:9/x" for e in listed)
