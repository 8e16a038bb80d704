"""The transactional outbox under the conditions it exists for: several relays draining at once, a consumer
that refuses, retries that run out, and an operator re-driving what was parked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import insert, select

from gateway.app import SCHEMA, create_app
from gateway.settings import GatewaySettings
from kit.contracts import PurchaseCreated
from kit.db import Database
from kit.events import OutboxRelay, publish
from kit.tables import outbox_deliveries, outbox_events
from tests.conftest import INTERNAL_TOKEN, Platform
from tests.loop.helpers import purchase_body
from tests.support.database import create_database, drop_database, server_url
from tests.support.servers import InProcessServer, free_port

pytestmark = pytest.mark.real_commits


@pytest.fixture
async def own_database(platform: Platform) -> AsyncIterator[str]:
    """A database of the test's own, migrated for the gateway: no other relay can touch its outbox."""
    base = await asyncio.to_thread(server_url)
    url, name = await create_database(base)
    asyncpg_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    # serving the gateway once migrates its schema; its own relay is stopped again with it
    gateway = await InProcessServer(create_app(GatewaySettings(DATABASE_URL=url))).start()  # type: ignore[call-arg]
    await gateway.stop()
    yield asyncpg_url
    await drop_database(base, name)


async def test_two_relays_deliver_every_event_once(platform: Platform, own_database: str) -> None:
    database = await Database.connect(own_database, SCHEMA, pool_size=4)
    bodies = [purchase_body(f"relay-{uuid4().hex[:8]}", total="10.00") for _ in range(60)]
    async with database.transaction() as session:
        for body in bodies:
            occurred_at = datetime.fromisoformat(body["occurred_at"])
            await publish(session, PurchaseCreated.model_validate(body), occurred_at=occurred_at, consumers=["points"])
    relays = [OutboxRelay(database, {"points": platform.urls["points"]}, INTERNAL_TOKEN, batch_size=7) for _ in (1, 2)]
    try:
        await asyncio.gather(*(relay.run_until_idle() for relay in relays))
        async with database.transaction() as session:
            rows = (await session.execute(select(outbox_deliveries.c.status, outbox_deliveries.c.attempts))).all()
    finally:
        for relay in relays:
            await relay.aclose()
        await database.dispose()
    assert len(rows) == len(bodies)
    # claimed by exactly one relay each: a second claim would have counted a second attempt
    assert {(status, attempts) for status, attempts in rows} == {("delivered", 1)}
    async with platform.service_client("points") as points:
        for body in bodies[:10]:
            ledger = (await points.get(f"/v1/customers/{body['customer_id']}/points/transactions")).json()["items"]
            assert [(t["type"], t["reference"]) for t in ledger] == [("earn", body["purchase_id"])]


async def test_parked_deliveries_are_visible_and_can_be_redriven(platform: Platform, own_database: str) -> None:
    url = own_database.replace("postgresql+asyncpg://", "postgresql://", 1)
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = GatewaySettings(  # type: ignore[call-arg]
        DATABASE_URL=url,
        POINTS_URL=nowhere,
        COUPON_URL=platform.urls["coupon"],
        RECOMMEND_URL=platform.urls["recommend"],
        SURVEY_URL=platform.urls["survey"],
        OUTBOX_POLL_SECONDS=0.05,
        OUTBOX_MAX_ATTEMPTS=2,
        OUTBOX_BASE_DELAY_SECONDS=0.05,
        OUTBOX_MAX_DELAY_SECONDS=0.1,
    )
    gateway = await InProcessServer(create_app(settings)).start()
    body = purchase_body(total="12.00")
    try:
        async with httpx.AsyncClient(base_url=gateway.url, headers=platform.client().headers) as client:
            assert (await client.post("/v1/purchases", json=body)).status_code == 202
            parked: list[dict] = []
            for _ in range(100):
                parked = (await client.get("/v1/admin/deliveries", params={"status": "failed"})).json()["items"]
                if parked:
                    break
                await asyncio.sleep(0.1)
            assert [(d["consumer"], d["attempts"]) for d in parked] == [("points", 2)]
            assert "Connect" in parked[0]["last_error"]  # ClientConnectorError, or the host refusing
            purchase = (await client.get(f"/v1/purchases/{body['purchase_id']}")).json()
            assert purchase["deliveries"]["points"] == "failed"

            # the operator fixes the route to the points service, then re-drives the parked delivery
            gateway.server.config.app.state.outbox_relay.consumers["points"] = platform.urls["points"]
            retry = await client.post(f"/v1/admin/deliveries/{parked[0]['id']}/retry")
            assert retry.status_code == 202
            for _ in range(100):
                purchase = (await client.get(f"/v1/purchases/{body['purchase_id']}")).json()
                if purchase["deliveries"]["points"] == "delivered":
                    break
                await asyncio.sleep(0.1)
            assert purchase["deliveries"]["points"] == "delivered"
            again = await client.post(f"/v1/admin/deliveries/{parked[0]['id']}/retry")
            assert again.status_code == 404  # only failed deliveries can be re-driven
    finally:
        await gateway.stop()
    async with platform.service_client("points") as points:
        ledger = (await points.get(f"/v1/customers/{body['customer_id']}/points/transactions")).json()["items"]
    assert [(t["type"], t["reference"]) for t in ledger] == [("earn", body["purchase_id"])]


async def test_a_malformed_event_is_refused_once_and_parked(platform: Platform, own_database: str) -> None:
    """A payload that does not fit its contract (here written by hand, as a producer's bug would) is refused by
    the consumer's router in one place: parked at its first attempt, counted, logged; the same batch's other
    events are applied."""
    database = await Database.connect(own_database, SCHEMA, pool_size=2)
    good = purchase_body(total="10.00")
    bad_id, bad_customer = uuid4(), f"malformed-{uuid4().hex[:8]}"
    async with platform.service_client("points") as points:
        before = _malformed_count((await points.get("/metrics")).text)
    relay = OutboxRelay(database, {"points": platform.urls["points"]}, INTERNAL_TOKEN)
    try:
        async with database.transaction() as session:
            malformed = {"purchase_id": f"p-{bad_customer}", "customer_id": bad_customer, "currency": "EUR",
                         "total": "ten", "items": []}  # fmt: skip
            await session.execute(insert(outbox_events).values(id=bad_id, type="purchase.created", payload=malformed))
            await session.execute(insert(outbox_deliveries).values(event_id=bad_id, consumer="points"))
            await publish(session, PurchaseCreated.model_validate(good), consumers=["points"])
        await relay.run_until_idle()
        async with database.transaction() as session:
            rows = (
                await session.execute(
                    select(
                        outbox_deliveries.c.event_id,
                        outbox_deliveries.c.status,
                        outbox_deliveries.c.attempts,
                        outbox_deliveries.c.last_error,
                    )
                )
            ).all()
    finally:
        await relay.aclose()
        await database.dispose()
    states = {row.event_id: row for row in rows}
    assert (states[bad_id].status, states[bad_id].attempts) == ("failed", 1)
    assert "malformed_event" in states[bad_id].last_error and "total" in states[bad_id].last_error
    assert [row.status for event_id, row in states.items() if event_id != bad_id] == ["delivered"]
    async with platform.service_client("points") as points:
        assert _malformed_count((await points.get("/metrics")).text) == before + 1
        ledger = (await points.get(f"/v1/customers/{good['customer_id']}/points/transactions")).json()["items"]
        assert [t["reference"] for t in ledger] == [good["purchase_id"]]
        # straight to the router, the refusal is a 422 problem, and nothing is recorded as handled
        envelope = {"id": str(bad_id), "type": "purchase.created", "occurred_at": good["occurred_at"],
                    "payload": {"customer_id": bad_customer}}  # fmt: skip
        refused = await points.post("/internal/events", json=envelope)
        assert (refused.status_code, refused.json()["code"]) == (422, "malformed_event")
        fixed = {**envelope, "payload": {**good, "purchase_id": f"p-{bad_customer}", "customer_id": bad_customer}}
        assert (await points.post("/internal/events", json=fixed)).json() == {"status": "processed"}


def _malformed_count(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('events_malformed_total{type="purchase.created"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_delivery_is_deduplicated_by_its_event_id_alone(platform: Platform) -> None:
    """The events route ignores an Idempotency-Key: a redelivery answers `duplicate` (processed_events), not a
    replay of the first answer."""
    body = purchase_body(total="5.00")
    envelope = {"id": str(uuid4()), "type": "purchase.created", "occurred_at": body["occurred_at"], "payload": body}
    async with platform.service_client("points", **{"Idempotency-Key": envelope["id"]}) as points:
        assert (await points.post("/internal/events", json=envelope)).json() == {"status": "processed"}
        assert (await points.post("/internal/events", json=envelope)).json() == {"status": "duplicate"}
