"""The experiments and webhook pages over real HTTP, signed in as the admin: each form reaches the gateway's own
operation and what it made is there in the API afterwards."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import Platform
from tests.console.conftest import browser_client, csrf_of, sign_in


@pytest.mark.own_platform(services=["coupon", "gateway"])  # its surprise rule would fire on every purchase
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


async def test_pending_fulfilments_of_every_customer_handed_over_from_the_rewards_page(
    platform: Platform, console: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    reward = (await admin.post("/v1/rewards", json={"name": "Queue tote", "kind": "item", "cost_points": 10})).json()
    waiting = []
    for customer in ("queue-ann", "queue-bob"):
        earned = await admin.post(f"/v1/customers/{customer}/points/earn", json={"points": 10, "reference": "q"})
        assert earned.status_code == 201, earned.text
        redeemed = await admin.post(
            f"/v1/customers/{customer}/reward-redemptions", json={"reward_id": reward["id"], "reference": "queue"}
        )
        assert redeemed.status_code == 201, redeemed.text
        waiting.append(redeemed.json()["redemption_id"])

    page = await console.get("/console/rewards")
    assert page.status_code == 200
    queue = page.text.split('id="pending"')[1].split("</table>")[0]
    assert "queue-ann" in queue and "queue-bob" in queue and "Queue tote" in queue
    assert queue.index("queue-bob") < queue.index("queue-ann")  # newest first
    assert all(f'value="{r}"' in queue for r in waiting)

    # without the form's token nothing is handed over
    forged = await console.post("/console/rewards", data={"action": "fulfil", "redemption_id": waiting[0]})
    assert forged.status_code == 403
    assert (await admin.get("/v1/customers/queue-ann/reward-redemptions")).json()["items"][0]["status"] == "pending"

    done = await console.post(
        "/console/rewards", data={"csrf": csrf_of(page.text), "action": "fulfil", "redemption_id": waiting[0]}
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/rewards?done=fulfilled"
    after = await console.get(done.headers["location"])
    assert "Marked as handed over" in after.text
    queue = after.text.split('id="pending"')[1].split("</table>")[0]
    assert f'value="{waiting[0]}"' not in queue and f'value="{waiting[1]}"' in queue
    assert (await admin.get("/v1/customers/queue-ann/reward-redemptions")).json()["items"][0]["status"] == "fulfilled"

    # a second fulfilment of the same item changes nothing and says so
    again = await console.post(
        "/console/rewards", data={"csrf": csrf_of(after.text), "action": "fulfil", "redemption_id": waiting[0]}
    )
    assert again.status_code == 303

    # a key that reads points sees the queue but has no button; one that cannot read points is told why
    reader = (await admin.post("/v1/api-keys", json={"name": "queue reader", "scopes": ["points:read"]})).json()
    async with browser_client(platform) as client:
        assert (await sign_in(client, reader["key"])).status_code == 303
        seen = await client.get("/console/rewards")
        queue = seen.text.split('id="pending"')[1].split("</table>")[0]
        assert "queue-bob" in queue and "Fulfil" not in queue
        refused = await client.post(
            "/console/rewards", data={"csrf": csrf_of(seen.text), "action": "fulfil", "redemption_id": waiting[1]}
        )
        assert refused.status_code == 403
    assert (await admin.get("/v1/customers/queue-bob/reward-redemptions")).json()["items"][0]["status"] == "pending"
    outsider = (await admin.post("/v1/api-keys", json={"name": "queue outsider", "scopes": ["coupons:read"]})).json()
    async with browser_client(platform) as client:
        assert (await sign_in(client, outsider["key"])).status_code == 303
        seen = await client.get("/console/rewards")
        assert seen.status_code == 200 and 'id="pending"' not in seen.text and "queue-bob" not in seen.text


async def test_the_home_page_figures_count_a_purchase_as_soon_as_it_is_accepted(
    console: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """The gateway keeps its last figures only while no purchase was added: the next view counts a new one."""

    def shown(html: str) -> int:
        found = re.search(r"([\d,]+) purchases over the last", html)
        assert found, "the weekly chart's summary"
        return int(found.group(1).replace(",", ""))

    now = datetime.now(UTC)
    for n, at in enumerate((now, now - timedelta(minutes=1))):
        body = {
            "purchase_id": f"console-home-{uuid.uuid4().hex}",
            "customer_id": "console-home",
            "occurred_at": at.isoformat(),
            "currency": "EUR",
            "total": "12.00",
            "items": [{"product_id": "x", "name": "x", "category": "misc", "unit_price": "12.00", "quantity": 1}],
        }
        if n == 1:
            before = shown((await console.get("/console/")).text)
            assert shown((await console.get("/console/")).text) == before  # nothing new: the same figures
        accepted = await admin.post("/v1/purchases", json=body)
        assert accepted.status_code == 202, accepted.text
    assert shown((await console.get("/console/")).text) == before + 1
