"""A PostgreSQL restart under traffic of each kind: every path recovers by itself, and no write is lost or doubled.

The server is an embedded PostgreSQL of this test's own (never TEST_DATABASE_URL's: the test restarts it). Each
kind of traffic runs alone while the server restarts, because one path must not rely on another to clear the
pool for it: ORM reads, ORM writes, points redemptions on the raw driver (without an Idempotency-Key the
statement runs on its own; with one it joins the key's transaction) and coupon redemptions (raw driver, inside
the request's transaction). Clients retry a refused request with the same natural key (reference, order id) or
Idempotency-Key until it succeeds, as the API asks; afterwards the ledger must hold each write exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from coupon.app import create_app as coupon_app
from coupon.settings import CouponSettings
from kit.embedded import restart_embedded_postgres, start_embedded_postgres
from points.app import create_app as points_app
from points.settings import PointsSettings
from tests.conftest import INTERNAL_TOKEN
from tests.support.database import ROOT, create_database
from tests.support.servers import InProcessServer

pytestmark = [pytest.mark.slow, pytest.mark.real_commits]

WORKERS = 4
# From the moment the server is ready again, every kind of traffic must be served again within this.
RECOVERY_SECONDS = 10.0
ADMIN = {"X-Internal-Token": INTERNAL_TOKEN, "X-Caller-Kind": "admin", "X-Caller-Id": "admin"}


@dataclass
class Rig:
    server: Any
    points: str
    coupon: str


@pytest.fixture(scope="module")
async def rig() -> AsyncIterator[Rig]:
    # under the project (pgserver's own system user must reach it), on a short path (its Unix socket is there)
    pgdata = ROOT / ".data" / f"restart-{uuid.uuid4().hex[:8]}"
    server = await asyncio.to_thread(start_embedded_postgres, pgdata)
    url, _ = await create_database(str(server.get_uri()))
    common = {"DATABASE_URL": url, "LOYALTY_INTERNAL_TOKEN": INTERNAL_TOKEN, "LOG_LEVEL": "WARNING", "DB_POOL_SIZE": 5}
    servers = [
        await InProcessServer(points_app(PointsSettings(**common))).start(),  # type: ignore[arg-type]
        await InProcessServer(coupon_app(CouponSettings(**common))).start(),  # type: ignore[arg-type]
    ]
    try:
        yield Rig(server, servers[0].url, servers[1].url)
    finally:
        for running in servers:
            await running.stop()
        await asyncio.to_thread(server.cleanup)
        shutil.rmtree(pgdata, ignore_errors=True)


@dataclass
class Traffic:
    """Workers sending one kind of request; each operation is retried with its own key until it succeeds."""

    send: Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]
    done: list[str] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)
    refusals: dict[int, int] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    restarted_at: float | None = None
    served_again: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            key = uuid.uuid4().hex
            while True:
                try:
                    response = await self.send(client, key)
                except httpx.TransportError:
                    status = 0
                else:
                    status = response.status_code
                if 200 <= status < 300:
                    self.done.append(key)
                    self.successes.append(time.monotonic())
                    if self.restarted_at is not None and self.successes[-1] >= self.restarted_at:
                        self.served_again.set()
                    break
                self.refusals[status] = self.refusals.get(status, 0) + 1
                await asyncio.sleep(0.05)

    def first_success_after(self, moment: float) -> float | None:
        return next((t for t in self.successes if t >= moment), None)


async def run_through_a_restart(rig: Rig, base_url: str, send: Callable[..., Awaitable[httpx.Response]]) -> Traffic:
    traffic = Traffic(send)
    async with httpx.AsyncClient(base_url=base_url, headers=ADMIN, timeout=30) as client:
        workers = [asyncio.create_task(traffic.worker(client)) for _ in range(WORKERS)]
        try:
            await asyncio.sleep(0.5)
            assert traffic.successes, f"no traffic before the restart: {traffic.refusals}"
            await asyncio.to_thread(restart_embedded_postgres, rig.server)
            ready = traffic.restarted_at = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(traffic.served_again.wait(), RECOVERY_SECONDS)
            await asyncio.sleep(0.3)
        finally:
            traffic.stop.set()
            await asyncio.wait_for(asyncio.gather(*workers), 30)
    recovered = traffic.first_success_after(ready)
    assert recovered is not None, f"not served {RECOVERY_SECONDS} s after the restart; refusals {traffic.refusals}"
    # while the server was down a request may be refused, with a 503 that says to retry: never anything else
    assert set(traffic.refusals) <= {503}, traffic.refusals
    return traffic


async def points_state(rig: Rig, customer: str) -> tuple[int, list[dict[str, Any]]]:
    async with httpx.AsyncClient(base_url=rig.points, headers=ADMIN, timeout=30) as client:
        balance = (await client.get(f"/v1/customers/{customer}/points")).json()["balance"]
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(f"/v1/customers/{customer}/points/transactions", params=params)).json()
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return int(balance), items


async def seed(rig: Rig, customer: str, points: int) -> None:
    async with httpx.AsyncClient(base_url=rig.points, headers=ADMIN, timeout=30) as client:
        body = {"points": points, "reference": "seed"}
        earned = await client.post(f"/v1/customers/{customer}/points/earn", json=body)
        assert earned.status_code == 201, earned.text


async def test_orm_reads_recover(rig: Rig) -> None:
    customer = f"reader-{uuid.uuid4().hex[:8]}"
    await seed(rig, customer, 10)

    async def read(client: httpx.AsyncClient, _: str) -> httpx.Response:
        return await client.get(f"/v1/customers/{customer}/points")

    await run_through_a_restart(rig, rig.points, read)


async def test_orm_writes_recover_and_count_once(rig: Rig) -> None:
    customer = f"earner-{uuid.uuid4().hex[:8]}"

    async def earn(client: httpx.AsyncClient, key: str) -> httpx.Response:
        return await client.post(f"/v1/customers/{customer}/points/earn", json={"points": 1, "reference": key})

    traffic = await run_through_a_restart(rig, rig.points, earn)
    balance, items = await points_state(rig, customer)
    assert sorted(item["reference"] for item in items) == sorted(traffic.done)
    assert balance == len(traffic.done)


@pytest.mark.parametrize("idempotency_key", [False, True], ids=["natural-key", "idempotency-key"])
async def test_raw_driver_redemptions_recover_and_count_once(rig: Rig, idempotency_key: bool) -> None:
    customer = f"spender-{uuid.uuid4().hex[:8]}"
    await seed(rig, customer, 1_000_000)

    async def redeem(client: httpx.AsyncClient, key: str) -> httpx.Response:
        headers = {"Idempotency-Key": key} if idempotency_key else {}
        return await client.post(
            f"/v1/customers/{customer}/points/redemptions", json={"points": 1, "reference": key}, headers=headers
        )

    traffic = await run_through_a_restart(rig, rig.points, redeem)
    balance, items = await points_state(rig, customer)
    spent = [item["reference"] for item in items if item["type"] == "redeem"]
    assert sorted(spent) == sorted(traffic.done)
    assert balance == 1_000_000 - len(traffic.done)


async def test_coupon_redemptions_recover_and_count_once(rig: Rig) -> None:
    async with httpx.AsyncClient(base_url=rig.coupon, headers=ADMIN, timeout=30) as client:
        campaign = await client.post(
            "/v1/coupon-campaigns",
            json={
                "name": f"restart-{uuid.uuid4().hex[:8]}",
                "discount": {"type": "percent", "value": "10", "currency": "EUR"},
                "code": {"length": 14, "charset": "unambiguous"},
                "limits": {"per_code": 1_000_000, "per_customer": 1_000_000},
            },
        )
        assert campaign.status_code == 201, campaign.text
        campaign_id = campaign.json()["id"]
        assert (await client.post(f"/v1/coupon-campaigns/{campaign_id}/codes", json={"count": 1})).status_code == 201
        code = (await client.get(f"/v1/coupon-campaigns/{campaign_id}/codes")).json()["items"][0]["code"]

    async def redeem(client: httpx.AsyncClient, key: str) -> httpx.Response:
        body = {"customer_id": "shopper", "order_id": key, "order_total": "10.00", "currency": "EUR"}
        return await client.post(f"/v1/coupons/{code}/redemptions", json=body)

    traffic = await run_through_a_restart(rig, rig.coupon, redeem)
    async with httpx.AsyncClient(base_url=rig.coupon, headers=ADMIN, timeout=30) as client:
        stats = (await client.get(f"/v1/coupon-campaigns/{campaign_id}")).json()["stats"]
    assert stats["redeemed"] == len(traffic.done)
