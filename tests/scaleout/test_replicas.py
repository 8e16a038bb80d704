"""Replicas on one machine, as real processes: two gateways and two points services (PROCESS_ROLE=api) and one
worker of each, against one PostgreSQL and one real redis-server. A partner's rate limit holds across the
gateways, the outbox is delivered exactly once, and redemptions stay exact across the two points replicas."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from uuid import uuid4

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_KEY, ARTIFACTS, INTERNAL_TOKEN, JWT_SECRET
from tests.loop.helpers import purchase_body
from tests.support.database import create_database, drop_database, server_url
from tests.support.redis import RedisServer
from tests.support.servers import ServiceProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.real_commits]
PARTNER_LIMIT = 10


async def test_two_gateways_and_two_points_replicas_with_their_workers(redis_server: RedisServer) -> None:
    base = await asyncio.to_thread(server_url)
    database, name = await create_database(base)
    names = ["points-a", "points-b", "points-worker", "gateway-a", "gateway-b", "gateway-worker"]
    ports = {n: free_port() for n in names}
    env = {
        "DATABASE_URL": database,
        "LOYALTY_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "LOYALTY_ADMIN_KEY": ADMIN_KEY,
        "LOYALTY_JWT_SECRET": JWT_SECRET,
        "REDIS_URL": redis_server.url,
        "LOG_LEVEL": "WARNING",
        "OUTBOX_POLL_SECONDS": "0.2",
        "DB_POOL_SIZE": "4",
        "RATE_LIMIT_PARTNER_PER_MINUTE": str(PARTNER_LIMIT),
        # the gateways find points on the first replica; the second is reached directly below
        "POINTS_URL": f"http://127.0.0.1:{ports['points-a']}",
        "GATEWAY_URL": f"http://127.0.0.1:{ports['gateway-a']}",
        **{f"{s}_URL": f"http://127.0.0.1:{free_port()}" for s in ("COUPON", "RECOMMEND", "SURVEY")},
    }
    processes: list[ServiceProcess] = []
    try:
        for process_name in names:
            module = process_name.split("-")[0]
            role = "worker" if process_name.endswith("worker") else "api"
            own = {**env, "PROCESS_ROLE": role, f"{module.upper()}_PORT": str(ports[process_name])}
            process = ServiceProcess(
                module, ports[process_name], own, ARTIFACTS / "logs" / f"replicas-{process_name}.log"
            )
            processes.append(process.start())
            # the first of each migrates; a gateway without coupon, recommend and survey is alive, not ready
            await process.wait_ready(timeout=120, path="/healthz" if module == "gateway" else "/readyz")
        url = {n: f"http://127.0.0.1:{ports[n]}" for n in names}
        admin_headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(headers=admin_headers, timeout=30) as admin:
            # purchases through both gateways, delivered to points by the one gateway worker
            customer = f"c-{uuid4().hex[:8]}"
            purchases = [purchase_body(customer, total="10.00") for _ in range(20)]
            answers = await asyncio.gather(
                *(admin.post(url[f"gateway-{'ab'[i % 2]}"] + "/v1/purchases", json=p) for i, p in enumerate(purchases))
            )
            assert [a.status_code for a in answers] == [202] * 20
            connection = await asyncpg.connect(database)
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    rows = await connection.fetch(
                        "SELECT status, attempts FROM gateway.outbox_deliveries WHERE consumer = 'points'"
                    )
                    if len(rows) == 20 and all(r["status"] == "delivered" for r in rows):
                        break
                    await asyncio.sleep(0.2)
                assert Counter((r["status"], r["attempts"]) for r in rows) == {("delivered", 1): 20}
                processed = await connection.fetchval(
                    "SELECT count(*) FROM points.processed_events WHERE type = 'purchase.created'"
                )
                assert processed == 20
            finally:
                await connection.close()

            # redemptions of one point at a time, at once, half on each points replica: exactly the balance goes
            balance = (await admin.get(url["gateway-a"] + f"/v1/customers/{customer}/points")).json()["balance"]
            assert balance > 0
            attempts = balance + 10
            async with httpx.AsyncClient(headers={"X-Internal-Token": INTERNAL_TOKEN}, timeout=60) as internal:
                results = await asyncio.gather(
                    *(
                        internal.post(
                            url[f"points-{'ab'[i % 2]}"] + f"/v1/customers/{customer}/points/redemptions",
                            json={"points": 1, "reference": f"r-{i}-{uuid4().hex[:6]}"},
                        )
                        for i in range(attempts)
                    )
                )
            statuses = Counter(r.status_code for r in results)
            assert statuses[201] == balance and sum(statuses.values()) == attempts, statuses
            assert (await admin.get(url["gateway-b"] + f"/v1/customers/{customer}/points")).json()["balance"] == 0

            # one partner budget across the two gateways (Redis)
            key = (
                await admin.post(url["gateway-a"] + "/v1/api-keys", json={"name": "r", "scopes": ["points:read"]})
            ).json()
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key['key']}"}, timeout=30) as partner:
            codes = [
                (await partner.get(url[f"gateway-{'ab'[i % 2]}"] + f"/v1/customers/{customer}/points")).status_code
                for i in range(PARTNER_LIMIT + 2)
            ]
        assert codes[:PARTNER_LIMIT] == [200] * PARTNER_LIMIT and codes[PARTNER_LIMIT:] == [429, 429]
    finally:
        for process in reversed(processes):
            process.stop()
        await drop_database(base, name)
