"""Each console page's latency with the Online Retail year loaded (goal: p95 at most 300 ms).

A fresh database and the platform as real processes; the year's purchases (about 20,000 invoices of 4,300
customers) written straight into the gateway's `purchases` table, which is what the home page's weekly and cohort
charts read (sending them through the API would also fan them out to every service, minutes of work that the
console's pages do not depend on); the demo's levers (rules, tiers, campaigns, survey), a few hundred customers
with points, one reward. Then a signed-in console client asks each page in turn, after a warm-up, and the table
gives the first answer, p50 and p95 per page beside the public API call the home page makes most (the campaign
list) as a baseline measured in the same run (the home page keeps its purchase figures for a minute: the first
answer shows what computing them costs).

    python -m scripts.bench_console   (BENCH_CONSOLE_REQUESTS=40 per page)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import orjson

from scripts.benchlib import ADMIN_KEY, fresh_database, percentile, platform, print_table
from scripts.demo import set_up
from scripts.online_retail import FULL, invoices
from scripts.replay import purchase_payload

REQUESTS = int(os.environ.get("BENCH_CONSOLE_REQUESTS", "40"))
GOAL_MS = 300.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def load_year(database_url: str) -> list[str]:
    rows = []
    for invoice in invoices(FULL):
        body = purchase_payload(invoice)
        raw = orjson.dumps(body)
        rows.append((body["purchase_id"], body["customer_id"], hashlib.sha256(raw).hexdigest(), raw.decode()))
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
    return sorted({r[1] for r in rows})


async def timed(call: Callable[[], Awaitable[httpx.Response]]) -> tuple[float, list[float]]:
    """The first answer's time (nothing kept yet), then REQUESTS more after a short warm-up."""
    started = time.perf_counter()
    assert (await call()).status_code == 200
    first = (time.perf_counter() - started) * 1000
    for _ in range(2):
        assert (await call()).status_code == 200
    samples = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        response = await call()
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    return first, samples


async def bench() -> None:
    async with fresh_database() as database_url, platform(database_url) as stack:
        gateway = stack.url("gateway")
        async with httpx.AsyncClient(base_url=gateway, headers=stack.admin_headers, timeout=60) as admin:
            started = time.perf_counter()
            customers = await load_year(database_url)
            print(
                f"loaded {len(customers):,} customers' purchases in {time.perf_counter() - started:.0f} s", flush=True
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
                first, baseline = await timed(lambda: admin.get("/v1/coupon-campaigns", params={"limit": 100}))
                base_p50 = percentile(baseline, 0.5)
                rows: list[list[object]] = [
                    [
                        "API: GET /v1/coupon-campaigns (baseline)",
                        first,
                        base_p50,
                        percentile(baseline, 0.95),
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
                    first, samples = await timed(lambda page=page: console.get(page))  # type: ignore[misc]
                    p50, p95 = percentile(samples, 0.5), percentile(samples, 0.95)
                    verdict = "met" if p95 <= GOAL_MS else "NOT met"
                    rows.append([page, first, p50, p95, f"{p50 / base_p50:.1f}x", verdict])
        print_table(
            f"Console pages, Online Retail year loaded ({len(customers):,} customers; {REQUESTS} requests each, "
            f"one at a time; goal p95 <= {GOAL_MS:.0f} ms)",
            ["page", "first ms", "p50 ms", "p95 ms", "p50 / baseline p50", "goal"],
            rows,
        )


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
