"""Webhook endpoints and deliveries through the real gateway, to real HTTP receivers on loopback."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.webhooks.signing import sign, verify
from kit.json import dumps
from kit.webhooks import EVENT_MODELS
from scripts.webhook_receiver import InvalidWebhook
from scripts.webhook_receiver import verify as partner_verify
from tests.conftest import INTERNAL_TOKEN, Platform
from tests.webhooks.conftest import OWN_GATEWAY, EndpointFactory
from tests.webhooks.receiver import Receiver

Receivers = Callable[..., Awaitable[Receiver]]

# The Standard Webhooks specification's published test vector.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signatures_match_the_standard_webhooks_test_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    assert verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, f"v1,bogus {SPEC_SIGNATURE}")
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TIMESTAMP), "webhook-signature": SPEC_SIGNATURE}
    assert partner_verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP) == {"test": 2432232314}
    with pytest.raises(InvalidWebhook):
        partner_verify(SPEC_SECRET, headers, SPEC_BODY + b" ", now=SPEC_TIMESTAMP)
    with pytest.raises(InvalidWebhook):  # a replay long after
        partner_verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 3600)


async def send_event(platform: Platform, event_type: str, data: dict[str, Any]) -> uuid.UUID:
    """What a service's outbox relay does: post the event to the gateway's internal events route."""
    event_id = uuid.uuid4()
    body = {"id": str(event_id), "type": event_type, "occurred_at": "2026-12-03T09:30:00Z", "payload": data}
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as client:
        response = await client.post(
            "/internal/events",
            content=dumps(body),
            headers={"X-Internal-Token": INTERNAL_TOKEN, "Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.text
    return event_id


def sample(event_type: str, customer_id: str = "cust-1042") -> dict[str, Any]:
    model = EVENT_MODELS[event_type]
    return {**model.model_validate(model.sample).model_dump(mode="json"), "customer_id": customer_id}


def check_signed(received: Any, secret: str) -> Any:
    event = partner_verify(secret, received.headers, received.body)
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-id"].startswith("msg_")
    assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60
    return event


class TestEndpoints:
    @OWN_GATEWAY
    async def test_the_secret_is_shown_once_and_the_endpoint_can_be_changed_and_deleted(
        self, admin: httpx.AsyncClient, endpoints: EndpointFactory
    ) -> None:
        created = await endpoints(
            "https://partner.example.com/hooks", ["points.earned", "points.earned", "tier.changed"]
        )
        secret = created["secret"]
        assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
        assert created["events"] == ["points.earned", "tier.changed"] and created["active"] is True
        shown = (await admin.get(f"/v1/webhook-endpoints/{created['id']}")).json()
        assert "secret" not in shown and shown["url"] == "https://partner.example.com/hooks"
        listed = (await admin.get("/v1/webhook-endpoints", params={"limit": 200})).json()["items"]
        assert created["id"] in {e["id"] for e in listed} and all("secret" not in e for e in listed)

        patched = await admin.patch(
            f"/v1/webhook-endpoints/{created['id']}", json={"events": ["coupon.issued"], "active": False}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["events"] == ["coupon.issued"] and patched.json()["active"] is False
        assert patched.json()["disabled_reason"]
        resumed = await admin.patch(f"/v1/webhook-endpoints/{created['id']}", json={"active": True})
        assert resumed.json()["active"] is True and resumed.json()["disabled_at"] is None

        assert (await admin.delete(f"/v1/webhook-endpoints/{created['id']}")).status_code == 204
        assert (await admin.get(f"/v1/webhook-endpoints/{created['id']}")).status_code == 404

    @pytest.mark.parametrize(
        "body",
        [
            {"url": "ftp://partner.example.com/x", "events": ["points.earned"]},
            {"url": "https://partner.example.com/x", "events": []},
            {"url": "https://partner.example.com/x", "events": ["points.stolen"]},
            {"url": "https://user:pw@partner.example.com/x", "events": ["points.earned"]},
            {"url": "https://partner.example.com/x", "events": ["points.earned"], "secret": "whsec_mine"},
        ],
    )
    async def test_bad_registrations_are_422(self, admin: httpx.AsyncClient, body: dict[str, Any]) -> None:
        before = len((await admin.get("/v1/webhook-endpoints", params={"limit": 200})).json()["items"])
        response = await admin.post("/v1/webhook-endpoints", json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert len((await admin.get("/v1/webhook-endpoints", params={"limit": 200})).json()["items"]) == before

    async def test_only_the_admin_manages_endpoints(self, platform: Platform, admin: httpx.AsyncClient) -> None:
        key = (await admin.post("/v1/api-keys", json={"name": "p", "scopes": ["points:write"]})).json()["key"]
        async with platform.client(token=key) as partner:
            response = await partner.post(
                "/v1/webhook-endpoints", json={"url": "https://partner.example.com/x", "events": ["points.earned"]}
            )
        assert response.status_code == 403

    async def test_the_internal_events_route_needs_the_internal_token(self, platform: Platform) -> None:
        body = dumps({"id": str(uuid.uuid4()), "type": "points.earned", "occurred_at": "2026-12-03T09:30:00Z"})
        async with platform.client() as admin_client:
            as_admin = await admin_client.post("/internal/events", content=body)
        async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as client:
            forged = await client.post("/internal/events", content=body, headers={"X-Internal-Token": "guess" * 8})
        assert as_admin.status_code == 404 and forged.status_code == 404


@OWN_GATEWAY
class TestDelivery:
    async def test_every_event_type_arrives_signed_and_verifies(
        self, platform: Platform, receivers: Receivers, endpoints: EndpointFactory
    ) -> None:
        receiver = await receivers()
        endpoint = await endpoints(receiver.url, list(EVENT_MODELS))
        other = await receivers()
        await endpoints(other.url, ["survey.detractor"])  # subscribed to one type only
        sent = {t: await send_event(platform, t, sample(t)) for t in EVENT_MODELS}
        await receiver.wait_for(len(EVENT_MODELS))
        for received in receiver.received:
            event = check_signed(received, endpoint["secret"])
            assert received.id == f"msg_{sent[event['type']].hex}"
            assert event["timestamp"].startswith("2026-12-03T09:30:00")
            assert event["data"] == sample(event["type"])
        assert {r.json["type"] for r in receiver.received} == set(EVENT_MODELS)
        await other.wait_for(1)
        await asyncio.sleep(0.5)
        assert [r.json["type"] for r in other.received] == ["survey.detractor"]

    async def test_a_redelivered_event_is_sent_once(
        self, platform: Platform, receivers: Receivers, endpoints: EndpointFactory
    ) -> None:
        receiver = await receivers()
        await endpoints(receiver.url, ["points.earned"])
        event = {
            "id": str(uuid.uuid4()),
            "type": "points.earned",
            "occurred_at": "2026-12-03T09:30:00Z",
            "payload": sample("points.earned"),
        }
        headers = {"X-Internal-Token": INTERNAL_TOKEN, "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=platform.gateway_url, headers=headers) as c:
            for _ in range(2):
                assert (await c.post("/internal/events", content=dumps(event))).status_code == 200
        await receiver.wait_for(1)
        await asyncio.sleep(0.5)
        assert len(receiver.received) == 1

    async def test_a_failing_receiver_gets_retries_with_the_same_id_and_the_log_shows_them(
        self, platform: Platform, admin: httpx.AsyncClient, receivers: Receivers, endpoints: EndpointFactory
    ) -> None:
        receiver = await receivers(answers=[500, 503])
        endpoint = await endpoints(receiver.url, ["coupon.issued"])
        await send_event(platform, "coupon.issued", sample("coupon.issued"))
        received = await receiver.wait_for(3)
        assert len({r.id for r in received}) == 1
        assert len({r.body for r in received}) == 1
        for attempt in received:
            check_signed(attempt, endpoint["secret"])
        log = await wait_for_log(admin, endpoint["id"], lambda d: d["status"] == "delivered")
        assert log["attempts"] == 3 and log["message_id"] == received[0].id
        assert [a["status_code"] for a in log["attempt_log"]] == [500, 503, 204]
        assert log["attempt_log"][0]["response_excerpt"] == "answer 500"
        assert all(a["latency_ms"] >= 0 for a in log["attempt_log"])

    async def test_a_delivery_can_be_re_driven_with_the_same_id(
        self, platform: Platform, admin: httpx.AsyncClient, receivers: Receivers, endpoints: EndpointFactory
    ) -> None:
        receiver = await receivers()
        endpoint = await endpoints(receiver.url, ["tier.changed"])
        await send_event(platform, "tier.changed", sample("tier.changed"))
        await receiver.wait_for(1)
        log = await wait_for_log(admin, endpoint["id"], lambda d: d["status"] == "delivered")
        response = await admin.post(f"/v1/webhook-deliveries/{log['id']}/retry")
        assert response.status_code == 202, response.text
        second = await receiver.wait_for(2)
        assert second[0].id == second[1].id and second[0].body == second[1].body
        assert (await admin.post("/v1/webhook-deliveries/999999999/retry")).status_code == 404

    async def test_a_hanging_receiver_does_not_delay_another_endpoint(
        self, platform: Platform, receivers: Receivers, endpoints: EndpointFactory
    ) -> None:
        hanging = await receivers(hang_seconds=30)
        healthy = await receivers()
        await endpoints(hanging.url, ["points.redeemed"])
        await endpoints(healthy.url, ["points.redeemed"])
        count = 40  # more than one endpoint's share of requests in flight
        sent_at: dict[str, float] = {}
        for _ in range(count):
            event_id = await send_event(platform, "points.redeemed", sample("points.redeemed"))
            sent_at[f"msg_{event_id.hex}"] = time.monotonic()
        await healthy.wait_for(count, timeout=20)
        # the hanging endpoint holds its requests for its whole 10 s timeout; the other's never wait for them
        assert max(r.at - sent_at[r.id] for r in healthy.received) < 5
        assert 0 < len(hanging.received) < count  # it holds its own slots, and only those

    async def test_after_a_rotation_both_secrets_sign_for_a_while(
        self, platform: Platform, admin: httpx.AsyncClient, receivers: Receivers, endpoints: EndpointFactory
    ) -> None:
        receiver = await receivers()
        endpoint = await endpoints(receiver.url, ["survey.answered"])
        rotated = await admin.post(f"/v1/webhook-endpoints/{endpoint['id']}/secret-rotations")
        assert rotated.status_code == 201, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret != endpoint["secret"] and new_secret.startswith("whsec_")
        await send_event(platform, "survey.answered", sample("survey.answered"))
        (received,) = await receiver.wait_for(1)
        assert len(received.headers["webhook-signature"].split()) == 2
        check_signed(received, new_secret)
        check_signed(received, endpoint["secret"])
        shown = (await admin.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
        assert shown["previous_secret_expires_at"] == rotated.json()["previous_secret_expires_at"]

    async def test_an_endpoint_failing_for_days_is_disabled_visibly(
        self,
        platform: Platform,
        admin: httpx.AsyncClient,
        receivers: Receivers,
        endpoints: EndpointFactory,
        database_url: str,
    ) -> None:
        receiver = await receivers(status=500)
        endpoint = await endpoints(receiver.url, ["points.expired"])
        await send_event(platform, "points.expired", sample("points.expired"))
        await receiver.wait_for(1)
        await wait_for_log(admin, endpoint["id"], lambda d: d["attempts"] >= 1)
        shown = (await admin.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
        assert shown["failing_since"] is not None and shown["active"] is True
        connection = await asyncpg.connect(database_url, server_settings={"search_path": "gateway"})
        try:  # travel in time: it has been failing for six days
            await connection.execute(
                "UPDATE webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1",
                uuid.UUID(endpoint["id"]),
            )
        finally:
            await connection.close()
        await receiver.wait_for(2)
        deadline = time.monotonic() + 10
        while (shown := (await admin.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json())["active"]:
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.1)
        assert shown["disabled_at"] and "failed since" in shown["disabled_reason"]
        log = await wait_for_log(admin, endpoint["id"], lambda d: d["status"] == "failed")
        assert log["last_error"] == "endpoint disabled"
        refused = await admin.post(f"/v1/webhook-deliveries/{log['id']}/retry")
        assert refused.status_code == 409 and refused.json()["code"] == "endpoint_disabled"


async def wait_for_log(
    admin: httpx.AsyncClient, endpoint_id: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await admin.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries")
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        if items and condition(items[0]):
            return items[0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.1)
