"""Coupon rewards across the points and coupon services: the code comes back in the answer and is in the wallet;
a campaign that cannot issue gives the points and the stock back; and when the coupon service dies in the middle
the customer ends with the code or the points back, never neither, never both.

The fault test runs on a database of its own, with the coupon service as a real child process killed by PID and
the points service reaching it through a cutter (a loopback TCP relay that kills the coupon process at a chosen
moment of the exchange)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from points.app import create_app as points_app
from points.settings import PointsSettings
from tests.conftest import ARTIFACTS, Platform
from tests.points.conftest import audit_clean, balance, earn, ledger, new_id
from tests.points.test_gateway_access import customer_token
from tests.points.test_rewards import create_reward, redeem
from tests.support.database import create_database, drop_database, server_url
from tests.support.servers import InProcessServer, ServiceProcess, free_port

pytestmark = pytest.mark.real_commits


async def create_campaign(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body = {"name": new_id("reward campaign "), "discount": {"type": "percent", "value": "10"}, **overrides}
    response = await client.post("/v1/coupon-campaigns", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def wallet(client: httpx.AsyncClient, customer: str) -> list[str]:
    response = await client.get(f"/v1/customers/{customer}/coupons")
    assert response.status_code == 200, response.text
    return [c["code"] for c in response.json()["items"]]


async def test_a_coupon_reward_answers_with_its_code_in_the_wallet(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    campaign = await create_campaign(admin)
    reward = await create_reward(
        admin, name="10% off", kind="coupon", campaign_id=campaign["id"], cost_points=50, stock=3
    )
    customer = new_id()
    await earn(admin, customer, 120)
    async with platform.client(await customer_token(admin, customer)) as me:
        response = await redeem(me, customer, reward["id"], "coupon-1")
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["status"], body["points"], body["balance"]) == ("fulfilled", 50, 70)
        assert body["coupon_code"]
        assert await wallet(me, customer) == [body["coupon_code"]]
        again = await redeem(me, customer, reward["id"], "coupon-1")
        assert again.json() == body
        assert await wallet(me, customer) == [body["coupon_code"]]
    entry = (await ledger(admin, customer))[-1]
    assert (entry["description"], entry["reward"]["status"]) == ("Reward: 10% off", "fulfilled")
    refused = await admin.post(f"/v1/reward-redemptions/{body['redemption_id']}/cancellation")
    assert (refused.status_code, refused.json()["code"]) == (409, "redemption_not_cancellable")


async def test_a_campaign_that_cannot_issue_gives_points_and_stock_back(admin: httpx.AsyncClient) -> None:
    campaign = await create_campaign(admin)
    reward = await create_reward(admin, kind="coupon", campaign_id=campaign["id"], cost_points=50, stock=1)
    assert (await admin.patch(f"/v1/coupon-campaigns/{campaign['id']}", json={"active": False})).status_code == 200
    customer = new_id()
    await earn(admin, customer, 100)
    refused = await redeem(admin, customer, reward["id"], "r")
    assert (refused.status_code, refused.json()["code"], refused.json()["reason"]) == (
        422, "reward_not_available", "coupon_not_issued"
    )  # fmt: skip
    assert (await redeem(admin, customer, reward["id"], "r")).status_code == 422  # the repeat answers alike
    assert (await balance(admin, customer))["balance"] == 100
    assert (await admin.get(f"/v1/rewards/{reward['id']}")).json()["stock_left"] == 1
    assert await wallet(admin, customer) == []
    assert [e["type"] for e in await ledger(admin, customer)] == ["earn", "redeem", "cancel"]


async def test_a_coupon_reward_needs_a_campaign_that_exists(admin: httpx.AsyncClient) -> None:
    body = {"name": "x", "kind": "coupon", "cost_points": 5, "campaign_id": "5b0a2c8e-6b8f-4a53-9f2c-2b7a8e9b1c3d"}
    response = await admin.post("/v1/rewards", json=body)
    assert response.status_code == 422, response.text


# --- the coupon service dying in the middle ---


class Cutter:
    """A loopback TCP relay in front of the coupon service. Armed, it kills the coupon process once: either as
    soon as a request arrives (before the service could commit anything), or as soon as the service starts to
    answer (after it committed: the service commits before it sends a response), never passing the answer on."""

    def __init__(self, upstream_port: int, kill: Callable[[], None]) -> None:
        self.upstream_port = upstream_port
        self.kill = kill
        self.armed: str | None = None
        self.cuts = 0
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def arm(self, moment: str) -> None:
        """Kill at `moment` of the next exchange; connections kept alive from before are dropped, so the next
        request comes on a connection of its own."""
        for writer in self._open:
            writer.close()
        self.armed = moment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._open.add(client_w)
        try:
            if self.armed == "on_request":
                await client_r.read(1)
                self._cut()
                return
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                return
            forward = asyncio.create_task(self._pipe(client_r, up_w))
            try:
                if self.armed == "after_commit":
                    first = await up_r.read(1)
                    if first:
                        self._cut()
                        return
                await self._pipe(up_r, client_w)
            finally:
                forward.cancel()
                up_w.close()
        finally:
            self._open.discard(client_w)
            client_w.close()

    def _cut(self) -> None:
        self.armed = None
        self.cuts += 1
        self.kill()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


@dataclass
class Rig:
    coupon: ServiceProcess
    cutter: Cutter
    points: InProcessServer
    internal: dict[str, str]

    def client(self, name: str) -> httpx.AsyncClient:
        url = self.points.url if name == "points" else self.coupon.url
        return httpx.AsyncClient(base_url=url, headers=self.internal, timeout=30)


DEADLINE_SECONDS = 4.0


@pytest.fixture
async def rig(platform: Platform) -> AsyncIterator[Rig]:
    base = await asyncio.to_thread(server_url)
    database_url, name = await create_database(base)
    env = {**platform.env, "DATABASE_URL": database_url}
    coupon = ServiceProcess("coupon", free_port(), env, ARTIFACTS / "logs" / "reward-faults-coupon.log").start()
    cutter = Cutter(coupon.port, coupon.kill)
    points: InProcessServer | None = None
    try:
        await coupon.wait_ready()
        await cutter.start()
        settings = PointsSettings(  # type: ignore[call-arg]
            DATABASE_URL=database_url,
            COUPON_URL=cutter.url,
            POINTS_COUPON_TIMEOUT_SECONDS=1.0,
            POINTS_REWARD_ISSUE_DEADLINE_SECONDS=DEADLINE_SECONDS,
            POINTS_REWARD_RETRY_INTERVAL_SECONDS=0.2,
            POINTS_REWARD_RETRY_MAX_DELAY_SECONDS=0.5,
        )
        points = await InProcessServer(points_app(settings)).start()
        yield Rig(coupon, cutter, points, {"X-Internal-Token": platform.env["LOYALTY_INTERNAL_TOKEN"]})
    finally:
        if points is not None:
            await points.stop()
        await cutter.stop()
        coupon.stop()
        await drop_database(base, name)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def status_of(points: httpx.AsyncClient, customer: str) -> dict[str, Any]:
    items = (await points.get(f"/v1/customers/{customer}/reward-redemptions")).json()["items"]
    assert len(items) == 1
    return items[0]  # type: ignore[no-any-return]


@pytest.mark.slow
async def test_the_coupon_service_killed_mid_way(rig: Rig) -> None:
    async with rig.client("points") as points, rig.client("coupon") as coupon:
        campaign = await create_campaign(coupon)
        reward = await create_reward(points, kind="coupon", campaign_id=campaign["id"], cost_points=40, stock=10)

        # 1. killed after committing the code, before answering: the code reaches the customer later, once
        committed = new_id()
        await earn(points, committed, 100)
        rig.cutter.arm("after_commit")
        response = await redeem(points, committed, reward["id"], "r")
        assert (response.status_code, response.json()["status"]) == (202, "issuing"), response.text
        assert rig.cutter.cuts == 1
        assert (await balance(points, committed))["balance"] == 60  # reserved, not lost
        rig.coupon.start()
        await rig.coupon.wait_ready()

        async def fulfilled() -> bool:
            return (await status_of(points, committed))["status"] == "fulfilled"

        await eventually(fulfilled)
        code = (await status_of(points, committed))["coupon_code"]
        assert await wallet(coupon, committed) == [code]  # the code issued before the kill, not a second one
        assert (await redeem(points, committed, reward["id"], "r")).json()["coupon_code"] == code
        assert (await balance(points, committed))["balance"] == 60
        assert [e["type"] for e in await ledger(points, committed)] == ["earn", "redeem"]

        # 2. killed as the request arrives, and down past the deadline: the points stay reserved while nothing
        # is known, then the key is voided and the points and the stock come back
        lost = new_id()
        await earn(points, lost, 100)
        rig.cutter.arm("on_request")
        response = await redeem(points, lost, reward["id"], "r")
        assert (response.status_code, response.json()["status"]) == (202, "issuing"), response.text
        await asyncio.sleep(DEADLINE_SECONDS + 1)  # retries meet a dead service; past the deadline voids do too
        assert (await status_of(points, lost))["status"] == "issuing"
        assert (await balance(points, lost))["balance"] == 60
        rig.coupon.start()
        await rig.coupon.wait_ready()

        async def cancelled() -> bool:
            return (await status_of(points, lost))["status"] == "cancelled"

        await eventually(cancelled)
        assert (await balance(points, lost))["balance"] == 100
        assert await wallet(coupon, lost) == []
        late = await coupon.post(
            "/internal/reward-issuances",
            json={
                "key": (await status_of(points, lost))["redemption_id"],
                "campaign_id": campaign["id"],
                "customer_id": lost,
            },
        )
        assert late.json() == {"status": "voided", "code": None, "reason": None}  # a late delivery issues nothing
        assert await wallet(coupon, lost) == []
        assert (await points.get(f"/v1/rewards/{reward['id']}")).json()["stock_left"] == 9
        await audit_clean(points)


async def test_with_an_idempotency_key_the_code_follows_the_answer(admin: httpx.AsyncClient) -> None:
    """The reservation commits with the stored answer, so the code is asked for right after it (202)."""
    campaign = await create_campaign(admin)
    reward = await create_reward(admin, kind="coupon", campaign_id=campaign["id"], cost_points=10)
    customer = new_id()
    await earn(admin, customer, 30)
    path = f"/v1/customers/{customer}/reward-redemptions"
    body = {"reward_id": reward["id"], "reference": "keyed"}
    first = await admin.post(path, json=body, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, first.json()["status"]) == (202, "issuing"), first.text
    again = await admin.post(path, json=body, headers={"Idempotency-Key": "k1"})
    assert again.json() == first.json() and again.headers.get("idempotent-replayed") == "true"
    deadline = time.monotonic() + 15
    while (items := (await admin.get(path)).json()["items"])[0]["status"] == "issuing":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert items[0]["status"] == "fulfilled"
    assert await wallet(admin, customer) == [items[0]["coupon_code"]]
    assert (await redeem(admin, customer, reward["id"], "keyed")).json()["coupon_code"] == items[0]["coupon_code"]
    assert (await balance(admin, customer))["balance"] == 20
