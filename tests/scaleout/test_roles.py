"""PROCESS_ROLE: a worker serves health and metrics only and runs the background work; an api process serves
requests and leaves the background work to the workers; `all` (the default, `make run`) does both."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import Platform
from tests.support.servers import InProcessServer

PROCESSES = ("gateway", "coupon", "points", "recommend", "survey")
# background jobs each process's worker runs at least, beside what every worker runs (the idempotency purge)
BACKGROUND = {
    "gateway": {"outbox.relay", "webhooks.dispatcher"},
    "coupon": {"outbox.relay"},
    "points": {"points.expiry", "outbox.relay"},
    "recommend": {"recommend.training_requests", "recommend.retrain"},
    "survey": {"outbox.relay", "survey.mail_sender"},
}


@asynccontextmanager
async def serve(name: str, role: str) -> AsyncIterator[tuple[InProcessServer, Any]]:
    module = importlib.import_module(f"{name}.app")
    settings_module = importlib.import_module(f"{name}.settings")
    settings_class = next(
        v for k, v in vars(settings_module).items() if k.endswith("Settings") and k != "ServiceSettings"
    )
    app = module.create_app(settings_class(PROCESS_ROLE=role, MIGRATE_ON_START="false"))
    server = await InProcessServer(app).start()
    try:
        yield server, app
    finally:
        await server.stop()


def job_names(app: Any) -> set[str]:
    return {task.get_name() for task in app.state.background_tasks}


@pytest.mark.parametrize("name", PROCESSES)
async def test_a_worker_serves_health_and_metrics_only_and_runs_the_background_work(
    platform: Platform, name: str
) -> None:
    async with serve(name, "worker") as (server, app), httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == ["database"]
        assert "http_requests_total" in (await client.get("/metrics")).text
        # no route of the API, not even behind the internal token
        assert set(app.openapi()["paths"]) == set()
        headers = {"X-Internal-Token": platform.env["LOYALTY_INTERNAL_TOKEN"]}
        assert (await client.post("/internal/events", json={}, headers=headers)).status_code == 404
        assert {"idempotency.purge", *BACKGROUND[name]} <= job_names(app)
        if name == "coupon":
            assert app.state.code_jobs is not None
        if name == "recommend":
            assert app.state.trainer is not None


@pytest.mark.parametrize("name", PROCESSES)
async def test_an_api_process_serves_requests_and_leaves_the_background_work(platform: Platform, name: str) -> None:
    async with serve(name, "worker") as (_, worker):
        background = job_names(worker)
    async with serve(name, "api") as (server, app), httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/readyz")).status_code == 200
        assert app.openapi()["paths"], "an api process serves its routes"
        assert not (job_names(app) & background), "no background job runs in an api process"
        assert getattr(app.state, "outbox_relay", None) is None
        assert getattr(app.state, "code_jobs", None) is None
        assert getattr(app.state, "trainer", None) is None, "an api process never trains"


async def test_all_is_the_default_and_does_both(platform: Platform) -> None:
    gateway = platform.servers["gateway"].server.config.app
    assert gateway.state.settings.process_role == "all"
    assert {"idempotency.purge", "outbox.relay"} <= job_names(gateway)
