"""Recommendations with the full UCI Online Retail catalog and history loaded.

- The recommend service and the gateway run as real processes on a fresh database.
- Loading: the whole catalog (`PUT /v1/products`, categories from scripts/online_retail.py) and all 397k clean
  purchase lines streamed as CSV into `POST /v1/interactions:import`; then `POST /v1/recommend/model/retrain`
  and the time until the new model serves (`GET /v1/recommend/model`, `training_seconds` from the service).
- Load: 64 clients, `GET /v1/customers/{id}/recommendations?limit=10` for 2,000 known customers in turn, straight
  to the service and through the gateway (admin key); straight again while a retrain runs; and both at 8 clients
  (below saturation, where latency is the answer's own and not a queue's).
- Ceilings in the same run: `GET /healthz` straight to the service, and `GET /v1/recommend/model` (answered from
  memory, no database) straight and through the gateway.
- Memory: resident set of the serving process (and of its training child) after all of it.

Data: Chen, Sain and Guo (2012), UCI Machine Learning Repository dataset 352, CC BY 4.0.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import psutil

from scripts.benchlib import (
    LOAD_HEADERS,
    CpuMeter,
    Stack,
    fresh_database,
    platform,
    print_table,
    result_row,
    run_load,
)
from scripts.online_retail import FULL, category_for, rows

CLIENTS = 64
RATE = 300
CENT = Decimal("0.01")
CUSTOMERS = 2_000


async def csv_chunks(lines: list[str], size: int = 20_000) -> AsyncIterator[bytes]:
    yield b"customer_id,product_id,quantity,occurred_at\n"
    for start in range(0, len(lines), size):
        yield "".join(lines[start : start + size]).encode()


async def wait_for_version(client: httpx.AsyncClient, version: int, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = (await client.get("/v1/recommend/model")).json()
        if model["version"] >= version and not model["training"]:
            return model  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise TimeoutError("model not trained")


def online_retail() -> tuple[dict[str, dict[str, Any]], list[str], set[str]]:
    """The full data set as the bench loads it: catalog items, CSV lines of the history, customers."""
    products: dict[str, dict[str, Any]] = {}
    lines: list[str] = []
    customers: set[str] = set()
    for row in rows(FULL):
        if row.product_id not in products:
            products[row.product_id] = {
                "product_id": row.product_id,
                "name": row.description or row.product_id,
                "category": category_for(row.description),
                "price": str(row.unit_price.quantize(CENT)),
                "currency": "GBP",
            }
        customers.add(row.customer_id)
        lines.append(f"{row.customer_id},{row.product_id},{row.quantity},{row.occurred_at.isoformat()}\n")
    for item in products.values():
        if item["price"] == "0.00":
            del item["price"], item["currency"]
    return products, lines, customers


async def bench() -> None:
    products, lines, customers = online_retail()

    async with fresh_database() as url, platform(url, services=["recommend", "points"]) as stack:
        service = stack.url("recommend")
        gateway = stack.url("gateway")
        async with httpx.AsyncClient(base_url=service, headers=stack.internal_headers, timeout=600) as client:
            started = time.perf_counter()
            catalog = list(products.values())
            with CpuMeter.current() as catalog_cpu:
                for start in range(0, len(catalog), 10_000):
                    put = await client.put("/v1/products", json={"items": catalog[start : start + 10_000]})
                    put.raise_for_status()
            catalog_seconds = time.perf_counter() - started
            started = time.perf_counter()
            with CpuMeter.current() as import_cpu:
                imported = await client.post(
                    "/v1/interactions:import", content=csv_chunks(lines), headers={"Content-Type": "text/csv"}
                )
            imported.raise_for_status()
            import_seconds = time.perf_counter() - started
            started = time.perf_counter()
            with CpuMeter.current() as train_cpu:
                retrain = await client.post("/v1/recommend/model/retrain")
                model = await wait_for_version(client, retrain.json()["version"])
            train_wall = time.perf_counter() - started
        print_table(
            "Loading and training (full Online Retail)",
            ["what", "count", "seconds", "per second", "CPU µs/item"],
            [
                ["catalog upsert (PUT /v1/products, 10,000 per call)", len(catalog), catalog_seconds,
                 len(catalog) / catalog_seconds, f"{catalog_cpu.ms_per_op(len(catalog)) * 1000:.1f}"],
                ["history import (CSV streamed)", imported.json()["imported"], import_seconds,
                 imported.json()["imported"] / import_seconds,
                 f"{import_cpu.ms_per_op(imported.json()['imported']) * 1000:.1f}"],
                ["training (read + EASE + repeat rates + swap), in the service", model["interactions"],
                 model["training_seconds"], "-", "-"],
                ["retrain call to new model serving (CPU per interaction)", model["customers"], train_wall, "-",
                 f"{train_cpu.ms_per_op(model['interactions']) * 1000:.1f}"],
            ],
        )  # fmt: skip

        known = random.Random(7).sample(sorted(customers), CUSTOMERS)
        straight = [
            {"method": "GET", "url": f"{service}/v1/customers/{c}/recommendations?limit=10",
             "headers": stack.internal_headers}
            for c in known
        ]  # fmt: skip
        through = [
            {"method": "GET", "url": f"{gateway}/v1/customers/{c}/recommendations?limit=10",
             "headers": stack.admin_headers}
            for c in known
        ]  # fmt: skip
        health = [{"method": "GET", "url": f"{service}/healthz"}]
        model_straight = [{"method": "GET", "url": f"{service}/v1/recommend/model", "headers": stack.internal_headers}]
        model_through = [{"method": "GET", "url": f"{gateway}/v1/recommend/model", "headers": stack.admin_headers}]

        ceiling = run_load("ceiling: GET /healthz, straight", health, concurrency=CLIENTS)
        memory_read = run_load("ceiling: GET /v1/recommend/model, straight", model_straight, concurrency=CLIENTS)
        direct = run_load("recommendations (10 items), straight", straight, concurrency=CLIENTS)
        gateway_ceiling = run_load("ceiling: GET /v1/recommend/model, gateway", model_through, concurrency=CLIENTS)
        proxied = run_load("recommendations (10 items), gateway", through, concurrency=CLIENTS)
        # below saturation: how long one answer takes when clients do not queue behind each other
        direct_8 = run_load("recommendations (10 items), straight, 8 clients", straight, concurrency=8, duration=6)
        proxied_8 = run_load("recommendations (10 items), gateway, 8 clients", through, concurrency=8, duration=6)

        async with httpx.AsyncClient(base_url=service, headers=stack.internal_headers, timeout=600) as client:
            retrain = await client.post("/v1/recommend/model/retrain")
            during = await asyncio.to_thread(
                run_load, "recommendations while a retrain runs, straight", straight, concurrency=CLIENTS,
                duration=8.0, warmup=0.5,
            )  # fmt: skip
            retrained = await wait_for_version(client, retrain.json()["version"])
        print_table(
            f"Recommendations at {CLIENTS} clients ({len(customers):,} customers, {len(products):,} products loaded)",
            LOAD_HEADERS,
            [
                result_row(ceiling),
                result_row(memory_read, ceiling),
                result_row(direct, ceiling),
                result_row(during, ceiling),
                result_row(gateway_ceiling),
                result_row(proxied, gateway_ceiling),
                result_row(direct_8, ceiling),
                result_row(proxied_8, gateway_ceiling),
            ],
        )
        process = stack.processes["recommend"].process
        assert process is not None
        serving = psutil.Process(process.pid)
        children = serving.children(recursive=True)
        print_table(
            "Memory",
            ["process", "RSS MiB"],
            [
                ["recommend (serving)", serving.memory_info().rss / 2**20],
                *[["recommend training child", c.memory_info().rss / 2**20] for c in children],
            ],
        )
        print(f"\n(retrain during load: version {retrained['version']}, {retrained['training_seconds']} s)")
        await open_loop(stack, known)


async def open_loop(stack: Stack, known: list[str]) -> None:
    """Issue 14's goal: recommendations through the gateway at a fixed 300 requests a second (open loop, latency
    from each request's planned start) with a p99 at most twice that of a keyed points read (one customer's
    balance, one primary-key lookup) at the same rate, in the same run; the two alternate, twice each."""
    gateway = stack.url("gateway")
    balances = "".join(f'{{"customer_id": "{c}", "points": 100, "reference": "bench-{c}"}}\n' for c in known)
    async with httpx.AsyncClient(base_url=gateway, headers=stack.admin_headers, timeout=600) as client:
        imported = await client.post(
            "/v1/points/balances:import", content=balances, headers={"Content-Type": "application/x-ndjson"}
        )
        imported.raise_for_status()
    points = [
        {"method": "GET", "url": f"{gateway}/v1/customers/{c}/points", "headers": stack.admin_headers} for c in known
    ]
    recs = [
        {"method": "GET", "url": f"{gateway}/v1/customers/{c}/recommendations?limit=10", "headers": stack.admin_headers}
        for c in known
    ]
    results = []
    for _ in range(2):
        results.append(run_load(f"points balance, gateway, {RATE} req/s", points, duration=10, rate=RATE))
        results.append(run_load(f"recommendations (10 items), gateway, {RATE} req/s", recs, duration=10, rate=RATE))
    baseline = max((r for r in results if r.label.startswith("points")), key=lambda r: r.p99_ms)
    worst = max((r for r in results if r.label.startswith("recommendations")), key=lambda r: r.p99_ms)
    print_table(
        f"Recommendations at a fixed {RATE} requests a second (open loop) against a keyed points read",
        ["what", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms/op", "p99 vs. points (worst)"],
        [[*result_row(r)[:-1], f"{r.p99_ms / baseline.p99_ms:.2f}x"] for r in results],
    )
    ratio = worst.p99_ms / baseline.p99_ms
    # a run that did not hold the rate (or lost requests) measured a queue, not the answers: no verdict
    held = all(r.rps >= 0.95 * RATE and not r.errors for r in results)
    verdict = (
        ("met" if ratio <= 2 else "NOT met")
        if held
        else (
            f"not measured: the machine did not hold {RATE} req/s (lowest {min(r.rps for r in results):.0f}),"
            " or requests failed"
        )
    )
    print(f"\n(goal p99 <= 2x the points read's: worst {worst.p99_ms:.1f} ms against {baseline.p99_ms:.1f} ms,"
          f" {ratio:.2f}x: {verdict}; load average {os.getloadavg()[0]:.1f})")  # fmt: skip


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
