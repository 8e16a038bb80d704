"""Webhook deliveries: how many a second the gateway signs and delivers to a local receiver, and how long an
event takes from its commit to its delivery.

- The receiver is an aiohttp server in a child process of its own, on loopback, answering 204 at once; it
  records each message's `webhook-id`, type, `timestamp` (the event's commit time) and its arrival time.
- Throughput: DELIVERIES messages are stored with their deliveries while the endpoint is paused, then the
  endpoint is resumed and the run lasts until the receiver has them all (claiming, signing, posting, logging
  each attempt). With one endpoint (16 requests in flight, the per-endpoint default) and with four.
- Ceiling, same run, same receiver: the same signed requests posted by a bare aiohttp client with the same
  number of requests in flight (no database, no claiming, no log).
- Commit to delivery: purchases at a fixed rate through the gateway for 10 s with the four services running;
  `purchase.accepted` is committed by the gateway itself, `points.earned` by the points service and relayed
  through its outbox to the gateway. Delay = arrival at the receiver - the event's `timestamp`, p50 and p99.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import httpx

from scripts.benchlib import ROOT, CpuMeter, cpu_cell, fresh_database, percentile, platform, print_table, run_load
from tests.support.servers import free_port

DELIVERIES = 4000
PURCHASE_RATE = 40.0
PURCHASE_SECONDS = 10.0


def serve_receiver(port: int) -> None:
    """Child process: answers every POST with 204, keeps (id, type, timestamp, arrival) per message."""
    from aiohttp import web

    seen: list[tuple[str, str, str, float]] = []

    async def receive(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        seen.append((request.headers["webhook-id"], body["type"], body["timestamp"], time.time()))
        return web.Response(status=204)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(seen)

    async def reset(_: web.Request) -> web.Response:
        seen.clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/{name}", receive)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class ReceiverProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scripts.bench_webhooks", "receiver", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"
        self.base = f"http://127.0.0.1:{self.port}"

    async def wait_listening(self) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    await client.get(f"{self.base}/stats")
                    return
                except httpx.TransportError:
                    await asyncio.sleep(0.05)

    async def seen(self) -> list[list[Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            return (await client.get(f"{self.base}/stats")).json()  # type: ignore[no-any-return]

    async def reset(self) -> None:
        async with httpx.AsyncClient() as client:
            await client.post(f"{self.base}/reset")

    async def wait_for(self, count: int, timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if len(await self.seen()) >= count:
                return time.perf_counter()
            await asyncio.sleep(0.05)
        raise TimeoutError(f"only {len(await self.seen())} of {count} webhooks arrived in {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def _store_paused(database_url: str, endpoint_ids: list[str], count: int) -> None:
    """COUNT messages and one delivery each, spread over the endpoints, straight into the gateway's tables."""
    from kit.json import dumps
    from kit.webhooks import PointsEarned

    connection = await asyncpg.connect(database_url, server_settings={"search_path": "gateway"})
    try:
        data = PointsEarned.model_validate(PointsEarned.sample).model_dump(mode="json")
        now = datetime.now(UTC)
        messages = [
            (
                f"msg_{uuid.uuid4().hex}",
                "points.earned",
                dumps({"type": "points.earned", "timestamp": now, "data": data}),
                now,
            )
            for _ in range(count)
        ]
        await connection.executemany(
            "INSERT INTO webhook_messages (id, type, body, occurred_at) VALUES ($1, $2, $3, $4)", messages
        )
        await connection.executemany(
            "INSERT INTO webhook_deliveries (message_id, endpoint_id) VALUES ($1, $2)",
            [(m[0], uuid.UUID(endpoint_ids[i % len(endpoint_ids)])) for i, m in enumerate(messages)],
        )
    finally:
        await connection.close()


async def throughput(stack: Any, database_url: str, receiver: ReceiverProcess, endpoints: int) -> tuple[float, float]:
    """Deliveries per second and platform CPU ms per delivery."""
    base, headers = stack.url("gateway"), stack.admin_headers
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as admin:
        ids = []
        for n in range(endpoints):
            created = await admin.post(
                "/v1/webhook-endpoints", json={"url": f"{receiver.base}/hooks/e{n}", "events": ["points.earned"]}
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
            assert (await admin.patch(f"/v1/webhook-endpoints/{ids[-1]}", json={"active": False})).status_code == 200
        await _store_paused(database_url, ids, DELIVERIES)
        await receiver.reset()
        meter = CpuMeter.current()
        meter.start()
        started = time.perf_counter()
        for endpoint_id in ids:
            await admin.patch(f"/v1/webhook-endpoints/{endpoint_id}", json={"active": True})
        finished = await receiver.wait_for(DELIVERIES, timeout=300)
        meter.stop()
        for endpoint_id in ids:
            await admin.delete(f"/v1/webhook-endpoints/{endpoint_id}")
    return DELIVERIES / (finished - started), meter.ms_per_op(DELIVERIES)


async def ceiling(receiver: ReceiverProcess, in_flight: int) -> tuple[float, float]:
    """The same kind of signed POSTs from a bare aiohttp client: requests a second, own CPU ms per request."""
    from gateway.webhooks.signing import new_secret, signature_header
    from kit.json import dumps
    from kit.webhooks import PointsEarned

    secret = new_secret()
    body = dumps(
        {
            "type": "points.earned",
            "timestamp": datetime.now(UTC),
            "data": PointsEarned.model_validate(PointsEarned.sample).model_dump(mode="json"),
        }
    )
    await receiver.reset()
    semaphore = asyncio.Semaphore(in_flight)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            async with semaphore:
                message_id, timestamp = f"msg_ceiling{i}", int(time.time())
                headers = {
                    "Content-Type": "application/json",
                    "webhook-id": message_id,
                    "webhook-timestamp": str(timestamp),
                    "webhook-signature": signature_header([secret], message_id, timestamp, body),
                }
                async with session.post(f"{receiver.base}/hooks/ceiling", data=body, headers=headers) as response:
                    await response.read()

        with CpuMeter(own=True) as meter:
            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(DELIVERIES)))
            seconds = time.perf_counter() - started
    return DELIVERIES / seconds, meter.ms_per_op(DELIVERIES)


async def commit_to_delivery(stack: Any, receiver: ReceiverProcess) -> dict[str, list[float]]:
    base, headers = stack.url("gateway"), stack.admin_headers
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as admin:
        created = await admin.post(
            "/v1/webhook-endpoints",
            json={"url": f"{receiver.base}/hooks/delay", "events": ["purchase.accepted", "points.earned"]},
        )
        assert created.status_code == 201, created.text
    await receiver.reset()
    count = int(PURCHASE_RATE * PURCHASE_SECONDS)
    now = datetime.now(UTC).isoformat()
    requests = [
        {
            "method": "POST",
            "url": f"{base}/v1/purchases",
            "headers": headers,
            "json": {
                "purchase_id": f"bench-wh-{uuid.uuid4().hex}",
                "customer_id": f"bench-wh-{i % 200}",
                "occurred_at": now,
                "currency": "EUR",
                "total": "25.00",
                "items": [
                    {"product_id": "p1", "name": "Mug", "category": "kitchen", "unit_price": "25.00", "quantity": 1}
                ],
            },
        }
        for i in range(count)
    ]
    await asyncio.to_thread(
        run_load,
        "purchases",
        requests,
        concurrency=16,
        duration=PURCHASE_SECONDS + 30,
        warmup=0,
        cycle=False,
        rate=PURCHASE_RATE,
    )
    await receiver.wait_for(2 * count, timeout=120)
    delays: dict[str, list[float]] = {}
    for _, event_type, timestamp, arrived in await receiver.seen():
        committed = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
        delays.setdefault(event_type, []).append((arrived - committed) * 1000)
    return delays


async def bench() -> None:
    receiver = ReceiverProcess()
    try:
        await receiver.wait_listening()
        ceiling_before = await ceiling(receiver, 16)
        async with fresh_database() as database_url:
            env = {"WEBHOOK_ALLOW_PRIVATE": "true"}
            async with platform(database_url, extra_env=env) as stack:
                one = await throughput(stack, database_url, receiver, 1)
                four = await throughput(stack, database_url, receiver, 4)
                delays = await commit_to_delivery(stack, receiver)
        ceiling_after = await ceiling(receiver, 16)
    finally:
        receiver.stop()
    best = max(ceiling_before[0], ceiling_after[0])
    ceiling_cpu = min(ceiling_before[1], ceiling_after[1])
    print_table(
        f"Webhook deliveries to a local receiver ({DELIVERIES:,} messages; goal: 500/s or more)",
        ["what", "deliveries/s", "CPU ms/delivery", "vs. ceiling"],
        [
            ["bare aiohttp client, 16 in flight (ceiling, best of before/after)", best, cpu_cell(ceiling_cpu), "100%"],
            ["gateway, 1 endpoint (16 in flight)", one[0], cpu_cell(one[1]), f"{one[0] / best:.0%}"],
            ["gateway, 4 endpoints (64 in flight)", four[0], cpu_cell(four[1]), f"{four[0] / best:.0%}"],
        ],
    )
    print_table(
        f"Commit to delivery ({PURCHASE_RATE:g} purchases/s for {PURCHASE_SECONDS:g} s, the four services running)",
        ["event", "produced by", "count", "p50 ms", "p99 ms"],
        [
            [t, who, len(delays.get(t, [])), percentile(delays.get(t, []), 0.5), percentile(delays.get(t, []), 0.99)]
            for t, who in (("purchase.accepted", "gateway"), ("points.earned", "points service, via its outbox"))
        ],
    )


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "receiver":
        serve_receiver(int(sys.argv[2]))
        return
    asyncio.run(bench())


if __name__ == "__main__":
    main()
