"""The recommender's roles as real processes: an api process (PROCESS_ROLE=api) and a worker (PROCESS_ROLE=worker)
against one PostgreSQL. A retrain asked through the api process is trained by the worker (the api process never
trains: it starts no training child and no model names it), the api process serves the new version without a
failed or stale answer in between, and a retried retrain request (same Idempotency-Key) asks for nothing twice."""

from __future__ import annotations

import asyncio
import io
import itertools
import time

import asyncpg
import httpx
import psutil
import pytest

from scripts.online_retail import SAMPLE, category_for, rows
from tests.conftest import ADMIN_KEY, ARTIFACTS, INTERNAL_TOKEN, JWT_SECRET
from tests.support.database import create_database, drop_database, server_url
from tests.support.servers import ServiceProcess, free_port

pytestmark = pytest.mark.slow


async def test_the_worker_trains_and_the_api_process_serves_each_new_version() -> None:
    base = await asyncio.to_thread(server_url)
    database, name = await create_database(base)
    ports = {"api": free_port(), "worker": free_port()}
    env = {
        "DATABASE_URL": database,
        "LOYALTY_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "LOYALTY_ADMIN_KEY": ADMIN_KEY,
        "LOYALTY_JWT_SECRET": JWT_SECRET,
        "LOG_LEVEL": "WARNING",
        "RECOMMEND_TUNING_BUDGET_SECONDS": "0",
        # the worker hears retrain requests through NOTIFY; a slow poll shows that it does not wait for the poll
        "RECOMMEND_MODEL_POLL_SECONDS": "0.3",
        **{f"{s}_URL": f"http://127.0.0.1:{free_port()}" for s in ("POINTS", "COUPON", "SURVEY", "GATEWAY")},
    }
    processes: dict[str, ServiceProcess] = {}
    try:
        for role in ("api", "worker"):  # the api process migrates first
            own = {**env, "PROCESS_ROLE": role, "RECOMMEND_PORT": str(ports[role])}
            log = ARTIFACTS / "logs" / f"recommend-roles-{role}.log"
            processes[role] = ServiceProcess("recommend", ports[role], own, log).start()
            await processes[role].wait_ready(timeout=120)
        products: dict[str, dict[str, str]] = {}
        csv = io.StringIO("customer_id,product_id,quantity,occurred_at\n")
        csv.seek(0, io.SEEK_END)
        customers: list[str] = []
        for row in itertools.islice(rows(SAMPLE), 6000):
            products.setdefault(
                row.product_id,
                {"product_id": row.product_id, "name": row.description or row.product_id,
                 "category": category_for(row.description)},
            )  # fmt: skip
            customers.append(row.customer_id)
            csv.write(f"{row.customer_id},{row.product_id},{row.quantity},{row.occurred_at.isoformat()}\n")
        headers = {"X-Internal-Token": INTERNAL_TOKEN}
        async with httpx.AsyncClient(base_url=processes["api"].url, headers=headers, timeout=60) as api:
            assert (await api.put("/v1/products", json={"items": list(products.values())})).status_code == 200
            imported = await api.post(
                "/v1/interactions:import", content=csv.getvalue().encode(), headers={"Content-Type": "text/csv"}
            )
            assert imported.status_code == 200 and imported.json()["rejected"] == 0

            async def retrain(key: str) -> int:
                answers = [
                    await api.post("/v1/recommend/model/retrain", headers={"Idempotency-Key": key}) for _ in range(2)
                ]
                assert [a.status_code for a in answers] == [202, 202]
                assert answers[1].headers.get("Idempotent-Replayed") == "true"
                assert answers[0].json() == answers[1].json()
                return int(answers[0].json()["version"])

            async def served_without_a_pause(version: int) -> dict[str, object]:
                """Recommendations from the api process until they come from `version` or newer: every answer
                a 200, the versions never going back."""
                seen: list[int] = []
                deadline = time.monotonic() + 120
                for customer in itertools.cycle(customers):
                    answer = await api.get(f"/v1/customers/{customer}/recommendations")
                    assert answer.status_code == 200, answer.text
                    seen.append(answer.json()["model_version"])
                    if seen[-1] >= version:
                        break
                    assert time.monotonic() < deadline, f"the api process never served model {version}"
                    await asyncio.sleep(0.02)
                assert seen == sorted(seen)
                model = (await api.get("/v1/recommend/model")).json()
                assert model["version"] >= version and not model["training"]
                return model  # type: ignore[no-any-return]

            first = await served_without_a_pause(await retrain("first"))
            assert first["interactions"] == imported.json()["imported"]
            second = await served_without_a_pause(await retrain("second"))
            assert second["version"] > first["version"]

        connection = await asyncpg.connect(database)
        try:
            trained = await connection.fetch("SELECT version, trained_by FROM recommend.models ORDER BY version")
            pending = await connection.fetchval("SELECT count(*) FROM recommend.training_requests")
        finally:
            await connection.close()
        # one model per retrain (the replayed requests asked for nothing), each by the worker
        assert [r["version"] for r in trained] == [first["version"], second["version"]]
        worker_pid = processes["worker"].process.pid  # type: ignore[union-attr]
        assert all(r["trained_by"].endswith(f":{ports['worker']}/{worker_pid}") for r in trained), trained
        assert pending == 0  # the requests covered are cleared
        # the api process never started a training child; the worker did
        assert psutil.Process(processes["api"].process.pid).children() == []  # type: ignore[union-attr]
        assert psutil.Process(worker_pid).children()
    finally:
        for process in reversed(list(processes.values())):
            process.stop()
        await drop_database(base, name)
