"""Each console page's latency with the Online Retail year loaded (goal: p95 at most 300 ms).

A fresh database and the platform as real processes; the year's purchases (about 18,400 invoices of 4,300
customers) written straight into the gateway's `purchases` table, which is what the home page's weekly and cohort
charts read (sending them through the API would also fan them out to every service, minutes of work that the
console's pages do not depend on), and the same purchases as points: one opening-balance line per purchase through
`POST /v1/points/balances:import` (a lot and a ledger line each, expiring over the next twelve months), so the
liability and the customer's ledger read a year of lots; the demo's levers (rules, tiers, campaigns, survey),
300 customers with points earned, one pending reward. Then a signed-in console client asks each page in turn,
after a warm-up, and the table gives per page the first answer, p50 and p95, the CPU time of the platform's
processes and database backends per view, and the internal calls each view made to the services (counted from
their own request counters), beside the public API call the home page makes most (the campaign list) as a
baseline measured in the same run. The load average is printed with the table: the machine may be shared.

    python -m scripts.bench_console   (BENCH_CONSOLE_REQUESTS=40 per page)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import httpx
import orjson

from scripts.benchlib import ADMIN_KEY, CpuMeter, Stack, cpu_cell, fresh_database, percentile, platform, print_table
from scripts.demo import set_up
from scripts.online_retail import FULL, invoices
from scripts.replay import purchase_payload

REQUESTS = int(os.environ.get("BENCH_CONSOLE_REQUESTS", "40"))
GOAL_MS = 300.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


SERVICES = ("coupon", "points", "recommend", "survey")
_REQUESTS_LINE = re.compile(r"^http_requests_total\{.*\} ([0-9.e+]+)$", re.M)


async def load_year(database_url: str) -> tuple[list[str], list[bytes]]:
    """The year's purchases into the gateway's table; and one opening-balance line per purchase for the points
    service (its points the purchase's total, expiring over the next twelve months in the order bought)."""
    rows = []
    balances = []
    now = datetime.now(UTC)
    first: datetime | None = None
    for invoice in invoices(FULL):
        body = purchase_payload(invoice)
        raw = orjson.dumps(body)
        rows.append((body["purchase_id"], body["customer_id"], hashlib.sha256(raw).hexdigest(), raw.decode()))
        first = first or invoice.occurred_at
        points = int(Decimal(body["total"]))
        if points > 0:
            expires = now + timedelta(days=1) + (invoice.occurred_at - first)
            balances.append(
                {
                    "customer_id": body["customer_id"],
                    "points": points,
                    "reference": body["purchase_id"],
                    "expires_at": expires.isoformat(),
                }
            )
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "gateway"})
    try:
        await connection.executemany(
            "INSERT INTO purchases (purchase_id, customer_id, body_hash, body, event_id) "
            "VALUES ($1, $2, $3, $4::jsonb, gen_random_uuid()) ON CONFLICT DO NOTHING",
            rows,
        )
        await connection.execute("ANALYZE purchases")
    finally:
        await connection.close()
    files = [
        b"\n".join(orjson.dumps(line) for line in balances[start : start + 10_000])
        for start in range(0, len(balances), 10_000)
    ]
    return sorted({r[1] for r in rows}), files


async def internal_calls(stack: Stack) -> float:
    """Requests the four services have answered so far (their own counters; /metrics itself is not counted)."""
    total = 0.0
    async with httpx.AsyncClient(timeout=30) as client:
        for name in SERVICES:
            text = (await client.get(stack.url(name) + "/metrics")).text
            total += sum(float(value) for value in _REQUESTS_LINE.findall(text))
    return total


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


@dataclass
class Timing:
    first: float
    samples: list[float]
    cpu_ms: float
    calls: float


async def timed(stack: Stack, call: Callable[[], Awaitable[httpx.Response]]) -> Timing:
    """The first answer's time (nothing kept yet), then REQUESTS more after a short warm-up, with the CPU time
    and the services' requests per view over those REQUESTS."""
    started = time.perf_counter()
    assert (await call()).status_code == 200
    first = (time.perf_counter() - started) * 1000
    for _ in range(2):
        assert (await call()).status_code == 200
    samples = []
    calls_before = await internal_calls(stack)
    with CpuMeter.current() as meter:
        for _ in range(REQUESTS):
            started = time.perf_counter()
            response = await call()
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.status_code
    calls = (await internal_calls(stack) - calls_before) / REQUESTS
    return Timing(first, samples, meter.ms_per_op(REQUESTS), calls)


async def bench() -> None:
    async with fresh_database() as database_url, platform(database_url) as stack:
        gateway = stack.url("gateway")
        async with httpx.AsyncClient(base_url=gateway, headers=stack.admin_headers, timeout=60) as admin:
            started = time.perf_counter()
            customers, balance_files = await load_year(database_url)
            for body in balance_files:
                imported = await admin.post(
                    "/v1/points/balances:import", content=body, headers={"Content-Type": "application/x-ndjson"}
                )
                assert imported.status_code == 200 and not imported.json()["rejected"], imported.text[:500]
            print(
                f"loaded {len(customers):,} customers' purchases (and their points) in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            await set_up(admin)
            for customer in customers[:300]:
                await admin.post(
                    f"/v1/customers/{customer}/points/earn", json={"points": 120, "reference": f"bench-{customer}"}
                )
            reward = (
                await admin.post("/v1/rewards", json={"name": "Tote bag", "kind": "item", "cost_points": 100})
            ).json()
            await admin.post(
                f"/v1/customers/{customers[0]}/reward-redemptions",
                json={"reward_id": reward["id"], "reference": "bench-tote"},
            )
            async with httpx.AsyncClient(base_url=gateway, timeout=60, headers={"Origin": gateway}) as console:
                form = await console.get("/console/login")
                csrf = _CSRF.search(form.text).group(1)  # type: ignore[union-attr]
                signed_in = await console.post("/console/login", data={"key": ADMIN_KEY, "csrf": csrf})
                assert signed_in.status_code == 303, signed_in.text
                load_before = load_average()
                base = await timed(stack, lambda: admin.get("/v1/coupon-campaigns", params={"limit": 100}))
                base_p50 = percentile(base.samples, 0.5)
                rows: list[list[object]] = [
                    [
                        "API: GET /v1/coupon-campaigns (baseline)",
                        base.first,
                        base_p50,
                        percentile(base.samples, 0.95),
                        cpu_cell(base.cpu_ms),
                        f"{base.calls:.0f}",
                        "1.0x",
                        "-",
                    ]
                ]
                for page in (
                    "/console/",
                    "/console/campaigns",
                    "/console/rules",
                    "/console/points",
                    "/console/rewards",
                    "/console/surveys",
                    f"/console/customers/{customers[0]}",
                    "/console/deliveries",
                    "/console/api-keys",
                    "/console/experiments",
                    "/console/webhooks",
                ):
                    timing = await timed(stack, lambda page=page: console.get(page))  # type: ignore[misc]
                    p50, p95 = percentile(timing.samples, 0.5), percentile(timing.samples, 0.95)
                    verdict = "met" if p95 <= GOAL_MS else "NOT met"
                    rows.append(
                        [
                            page,
                            timing.first,
                            p50,
                            p95,
                            cpu_cell(timing.cpu_ms),
                            f"{timing.calls:.0f}",
                            f"{p50 / base_p50:.1f}x",
                            verdict,
                        ]
                    )
        print_table(
            f"Console pages, Online Retail year loaded ({len(customers):,} customers; {REQUESTS} requests each, "
            f"one at a time; goal p95 <= {GOAL_MS:.0f} ms; load average {load_before} before, "
            f"{load_average()} after)",
            ["page", "first ms", "p50 ms", "p95 ms", "CPU ms/view", "service calls/view", "p50 / baseline p50", "goal"],
            rows,
        )


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
