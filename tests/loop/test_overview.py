"""The customer overview is served from a read model the gateway keeps by events (docs/purchases.md#customer-overview):
the customer's own changes through the gateway show at once, a change behind their back shows once its event
arrived (a bound of the relay's and the refresher's delays), a service that is down has its part null and named
in `unavailable`, and a customer token reads only its own overview."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import asyncpg
import httpx

from tests.conftest import Platform
from tests.support.rigs import points_behind_gateway
from tests.survey.conftest import address, create_survey, invite

# OUTBOX_POLL_SECONDS (0.1 in the suite) + OVERVIEW_REFRESH_SECONDS (0.1) + one refresh, with room for a busy
# machine: a change the customer did not make shows within this
STALE_BOUND = 10.0


async def overview_of(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def balance_in_overview(client: httpx.AsyncClient, path: str) -> int:
    """The points part's balance; on a busy machine a part may miss its time budget: asked again then, as an
    app would."""
    for _ in range(20):
        overview = await overview_of(client, path)
        if overview["points"] is not None:
            return int(overview["points"]["balance"])
        await asyncio.sleep(0.2)
    raise AssertionError(f"the points part stayed unavailable: {overview}")


async def stored_parts(database_url: str, customer: str) -> dict[str, dict[str, Any]]:
    """The read model's rows of `customer`, straight from the gateway's schema."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT service, body IS NOT NULL AS built, changed, seen FROM gateway.overview_parts"
            " WHERE customer_id = $1",
            customer,
        )
    finally:
        await connection.close()
    return {row["service"]: dict(row) for row in rows}


async def customer_token(admin: httpx.AsyncClient, customer: str) -> str:
    response = await admin.post("/v1/customer-tokens", json={"customer_id": customer, "ttl_seconds": 600})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def wait_stored(database_url: str, customer: str) -> None:
    """Until the read model's points row reflects every event about `customer` (the refresher has it)."""
    deadline = time.monotonic() + STALE_BOUND
    while True:
        points = (await stored_parts(database_url, customer)).get("points")
        if points is not None and points["built"] and points["seen"] >= points["changed"]:
            return
        assert time.monotonic() < deadline, f"the refresher did not store the points part: {points}"
        await asyncio.sleep(0.1)


async def test_the_customers_own_redemption_shows_at_once(admin: httpx.AsyncClient, platform: Platform) -> None:
    customer = f"ov-{uuid4().hex[:10]}"
    earned = await admin.post(f"/v1/customers/{customer}/points/earn", json={"points": 100, "reference": "e1"})
    assert earned.status_code == 201, earned.text
    # the earn's event reaches the gateway and the refresher stores the row: the overview is then a read of it
    await wait_stored(platform.env["DATABASE_URL"], customer)
    async with platform.client(await customer_token(admin, customer)) as app:
        assert await balance_in_overview(app, "/v1/me/overview") == 100
        for n, balance in ((1, 70), (2, 40), (3, 10)):
            redeemed = await app.post("/v1/me/points/redemptions", json={"points": 30, "reference": f"r{n}"})
            assert redeemed.status_code == 201, redeemed.text
            # at once: neither the stored row (older than the write) nor the event still on its way is waited for
            assert await balance_in_overview(app, "/v1/me/overview") == balance


async def test_a_change_behind_the_customers_back_shows_within_the_bound(
    admin: httpx.AsyncClient, platform: Platform
) -> None:
    customer = f"ov-{uuid4().hex[:10]}"
    database_url = platform.env["DATABASE_URL"]
    async with platform.service_client("points") as points:
        # straight at the service, as a purchase's delivery earns: the gateway hears of it only by the event
        earned = await points.post(f"/v1/customers/{customer}/points/earn", json={"points": 100, "reference": "e1"})
        assert earned.status_code == 201, earned.text
        # kept by events: the row is built before the customer ever asked
        await wait_stored(database_url, customer)
        assert set(await stored_parts(database_url, customer)) == {"points", "coupon", "recommend", "survey"}
        assert await balance_in_overview(admin, f"/v1/customers/{customer}/overview") == 100

        behind = await points.post(f"/v1/customers/{customer}/points/earn", json={"points": 50, "reference": "e2"})
        assert behind.status_code == 201, behind.text
    changed_at = time.monotonic()
    while (balance := await balance_in_overview(admin, f"/v1/customers/{customer}/overview")) != 150:
        assert balance == 100
        assert time.monotonic() - changed_at < STALE_BOUND, "the overview stayed stale past its bound"
        await asyncio.sleep(0.05)
    # never back: the stored row moved on with the event
    for _ in range(5):
        assert await balance_in_overview(admin, f"/v1/customers/{customer}/overview") == 150


async def test_a_customer_token_reads_only_its_own_overview(admin: httpx.AsyncClient, platform: Platform) -> None:
    me, other = f"ov-{uuid4().hex[:10]}", f"ov-{uuid4().hex[:10]}"
    async with platform.client(await customer_token(admin, me)) as app:
        mine = await app.get("/v1/me/overview")
        assert mine.status_code == 200, mine.text
        assert mine.json()["customer_id"] == me
        theirs = await app.get(f"/v1/customers/{other}/overview")
        assert theirs.status_code == 404, theirs.text
        assert theirs.headers["content-type"] == "application/problem+json"


async def test_a_stored_part_of_a_stopped_service_is_null_and_unavailable(platform: Platform) -> None:
    """The points service as its own process: its part is stored, then the process is killed. The overview does
    not serve the stored part of a service that does not answer: null, and named in `unavailable`."""
    async with points_behind_gateway(platform, "overview-points", OVERVIEW_BUDGET_MS=300) as rig:
        customer = f"ov-{uuid4().hex[:10]}"
        async with rig.client() as client:
            earned = await client.post(f"/v1/customers/{customer}/points/earn", json={"points": 40, "reference": "e"})
            assert earned.status_code == 201, earned.text
            path = f"/v1/customers/{customer}/overview"
            assert await balance_in_overview(client, path) == 40
            rig.points.kill()
            deadline = time.monotonic() + 5  # the services are probed every second
            while (overview := await overview_of(client, path))["points"] is not None:
                assert time.monotonic() < deadline, "the stored part of a stopped service was still shown"
                await asyncio.sleep(0.1)
            assert overview["rewards"] is None
            assert "points" in overview["unavailable"]

            rig.points.start()
            await rig.points.wait_ready()
            deadline = time.monotonic() + 15  # the circuit lets one trial call through after its reset time
            while "points" in (overview := await overview_of(client, path))["unavailable"]:
                assert time.monotonic() < deadline, "the points part did not come back with its service"
                await asyncio.sleep(0.2)
            assert overview["points"]["balance"] == 40


async def test_an_invitation_made_behind_the_customers_back_shows_within_the_bound(
    admin: httpx.AsyncClient, platform: Platform
) -> None:
    customer = f"ov-{uuid4().hex[:10]}"
    path = f"/v1/customers/{customer}/overview"
    survey = await create_survey(admin)
    first = await overview_of(admin, path)
    assert first["unavailable"] == [] and first["surveys"] == {"pending": []}, first
    # stored now; the invitation then comes from the survey service alone, with its `survey.invited` event
    invited = await invite(admin, survey["id"], customer, address())
    assert invited.status_code == 201, invited.text
    made_at = time.monotonic()
    while not (await overview_of(admin, path))["surveys"]["pending"]:
        assert time.monotonic() - made_at < STALE_BOUND, "the invitation stayed out of the overview past its bound"
        await asyncio.sleep(0.05)
    assert [s["survey_id"] for s in (await overview_of(admin, path))["surveys"]["pending"]] == [survey["id"]]


async def test_points_past_their_expiry_leave_the_overview_before_the_expiry_run(
    admin: httpx.AsyncClient, platform: Platform
) -> None:
    """A lot reaching its date is not spendable from that instant, whether or not the periodic expiry run has come:
    the points service's balance leaves it out, so the overview (refetched at that instant, or with the next event)
    never shows it, and the stored part is served again, not fetched on every visit."""
    customer = f"ov-{uuid4().hex[:10]}"
    path = f"/v1/customers/{customer}/overview"
    database_url = platform.env["DATABASE_URL"]
    async with platform.service_client("points") as points:
        earned = await points.post(f"/v1/customers/{customer}/points/earn", json={"points": 10, "reference": "e1"})
        assert earned.status_code == 201, earned.text
        await wait_stored(database_url, customer)
        connection = await asyncpg.connect(database_url)
        try:
            # the lot's date comes (time moved by SQL: the service has no clock to set); the run has not come
            await connection.execute(
                "UPDATE points.lots SET expires_at = now() - interval '1 day' WHERE customer_id = $1", customer
            )
            assert (await points.get(f"/v1/customers/{customer}/points")).json()["balance"] == 0
            again = await points.post(f"/v1/customers/{customer}/points/earn", json={"points": 5, "reference": "e2"})
            assert again.status_code == 201, again.text
            deadline = time.monotonic() + STALE_BOUND
            while (balance := await balance_in_overview(admin, path)) != 5:
                assert balance == 10, "points past their expiry were shown"
                assert time.monotonic() < deadline, "the second earn did not reach the overview"
                await asyncio.sleep(0.05)
            await wait_stored(database_url, customer)
            query = "SELECT fetched_at FROM gateway.overview_parts WHERE customer_id = $1 AND service = 'points'"
            stored_at = await connection.fetchval(query, customer)
            for _ in range(3):
                shown = await overview_of(admin, path)
                assert shown["points"]["balance"] == 5
                assert datetime.fromisoformat(shown["points"]["next_expiry"]["expires_at"]) > datetime.now(UTC)
            assert await connection.fetchval(query, customer) == stored_at
            ledger = (await points.get(f"/v1/customers/{customer}/points/transactions")).json()["items"]
            assert [t["type"] for t in ledger] == ["earn", "earn"]  # no run yet: only the view left the lot out
        finally:
            await connection.close()
