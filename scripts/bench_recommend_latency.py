"""Issue 14's latency goal alone (`make bench BENCH_ARGS=recommend_latency`; `make bench` runs it at the end of
`recommend`): the full Online Retail catalog and history loaded and trained, then recommendations through the
gateway at a fixed 300 requests a second (open loop, latency from each request's planned start) against a keyed
points read at the same rate, alternating, twice each; goal: p99 at most twice the points read's."""

from __future__ import annotations

import asyncio
import os
import random

import httpx

from scripts.bench_recommend import CUSTOMERS, csv_chunks, online_retail, open_loop, wait_for_version
from scripts.benchlib import fresh_database, platform


async def bench() -> None:
    products, lines, customers = online_retail()
    async with fresh_database() as url, platform(url, services=["recommend", "points"]) as stack:
        async with httpx.AsyncClient(
            base_url=stack.url("recommend"), headers=stack.internal_headers, timeout=600
        ) as client:
            catalog = list(products.values())
            for start in range(0, len(catalog), 10_000):
                (await client.put("/v1/products", json={"items": catalog[start : start + 10_000]})).raise_for_status()
            imported = await client.post(
                "/v1/interactions:import", content=csv_chunks(lines), headers={"Content-Type": "text/csv"}
            )
            imported.raise_for_status()
            retrain = await client.post("/v1/recommend/model/retrain")
            model = await wait_for_version(client, retrain.json()["version"])
        print(f"\n(model {model['version']}: {model['interactions']:,} purchase lines, {model['products']:,} products,"
              f" trained in {model['training_seconds']} s; load average {os.getloadavg()[0]:.1f})")  # fmt: skip
        await open_loop(stack, random.Random(7).sample(sorted(customers), CUSTOMERS))


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
