"""Two recommend replicas on one database: the platform's own (PROCESS_ROLE all: it serves and trains) and an api
replica beside it. Only a worker trains (exactly one at a time), the model is stored (versioned), and the api
replica loads each new version while it keeps answering; a retrain asked of the api replica is trained by the
worker."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from recommend.app import create_app
from recommend.engine import Engine
from recommend.settings import RecommendSettings
from recommend.trainer import Trainer
from tests.conftest import Platform
from tests.recommend.conftest import Retail, wait_for_model
from tests.support.servers import InProcessServer, free_port

pytestmark = pytest.mark.real_commits


@pytest.fixture
async def second(platform: Platform, retail: Retail) -> AsyncIterator[InProcessServer]:
    """An api replica beside the platform's own (same database, same settings, another port)."""
    port = free_port()
    settings = RecommendSettings(  # type: ignore[call-arg]
        RECOMMEND_PORT=port, RECOMMEND_MODEL_POLL_SECONDS=0.2, PROCESS_ROLE="api"
    )
    server = await InProcessServer(create_app(settings), port=port).start()
    yield server
    await server.stop()


def engine_of(server: InProcessServer) -> Engine:
    return server.server.config.app.state.engine  # type: ignore[no-any-return]


def trainer_of(server: InProcessServer) -> Trainer | None:
    return getattr(server.server.config.app.state, "trainer", None)


def client(platform: Platform, url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"X-Internal-Token": platform.env["LOYALTY_INTERNAL_TOKEN"]})


async def stored(platform: Platform) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(platform.env["DATABASE_URL"].replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "SELECT version, trained_by, started_at, finished_at, interactions FROM recommend.models ORDER BY version"
        )
    finally:
        await connection.close()
    return [dict(r) for r in rows]


async def serving(api: httpx.AsyncClient, version: int, timeout: float = 120) -> dict[str, Any]:
    """Wait until the replica serves `version` or newer; returns its model info."""
    for _ in range(int(timeout / 0.1)):
        model = (await api.get("/v1/recommend/model")).json()
        if model["version"] >= version:
            return model  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"the replica did not load model {version}")


async def test_an_api_replica_starts_from_the_stored_model_and_has_no_trainer(
    platform: Platform, retail: Retail, second: InProcessServer
) -> None:
    async with client(platform, platform.urls["recommend"]) as first_api, client(platform, second.url) as second_api:
        current = (await first_api.get("/v1/recommend/model")).json()
        model = await serving(second_api, current["version"], timeout=10)
        assert model["version"] == current["version"] and model["interactions"] == current["interactions"]
    assert trainer_of(second) is None and trainer_of(platform.servers["recommend"]) is not None
    jobs = {t.get_name() for t in second.server.config.app.state.background_tasks}
    assert jobs == {"recommend.catalog_reload", "recommend.model_poll"}


async def test_a_retrain_asked_of_the_api_replica_is_trained_by_the_worker_and_served_without_a_pause(
    platform: Platform, retail: Retail, second: InProcessServer
) -> None:
    customer = sorted(retail.history)[0]
    async with client(platform, platform.urls["recommend"]) as first_api, client(platform, second.url) as second_api:
        retrain = await second_api.post("/v1/recommend/model/retrain")
        assert retrain.status_code == 202
        version = retrain.json()["version"]
        statuses: list[int] = []
        versions: list[int] = []

        async def keep_asking() -> None:
            while True:
                answer = await second_api.get(f"/v1/customers/{customer}/recommendations")
                statuses.append(answer.status_code)
                versions.append(answer.json()["model_version"])
                if versions[-1] >= version:
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(keep_asking(), timeout=180)
        first = await wait_for_model(first_api, version)
        loaded = await wait_for_model(second_api, first["version"])
    assert set(statuses) == {200}
    assert versions == sorted(versions) and versions[0] < version <= versions[-1]
    assert trainer_of(second) is None  # it loaded the model, it did not train one
    # how long the worker took, as stored with the model
    assert loaded["training_seconds"] == pytest.approx(first["training_seconds"], abs=0.5)
    rows = await stored(platform)
    assert rows[-1]["version"] == first["version"]
    assert rows[-1]["trained_by"].endswith(f":{platform.env['RECOMMEND_PORT']}/{os.getpid()}")


async def test_retrains_asked_of_both_replicas_at_once_never_overlap(
    platform: Platform, retail: Retail, second: InProcessServer
) -> None:
    before = {r["version"] for r in await stored(platform)}
    # a training an earlier test asked for may still be running, and is stored after `before` was read: it is not
    # one of these requests' (the database's clock and this one are the same machine's)
    asked_at = datetime.now(UTC)
    async with client(platform, platform.urls["recommend"]) as first_api, client(platform, second.url) as second_api:
        answers = await asyncio.gather(
            first_api.post("/v1/recommend/model/retrain"), second_api.post("/v1/recommend/model/retrain")
        )
        wanted = max(a.json()["version"] for a in answers)
        models = await asyncio.gather(wait_for_model(first_api, wanted), wait_for_model(second_api, wanted))
    # both serve a model that covers both requests (one of them may already serve a second training's, when the
    # second request came while the first training ran)
    assert all(model["version"] >= wanted for model in models), models
    trainer = trainer_of(platform.servers["recommend"])
    assert trainer is not None
    for _ in range(1200):  # that second training, if any, has finished before the stored models are read
        if not trainer.training:
            break
        await asyncio.sleep(0.1)
    trained = [r for r in await stored(platform) if r["version"] not in before and r["started_at"] >= asked_at]
    assert 1 <= len(trained) <= 2  # one, or one each when the second request came after the first training began
    for earlier, later in itertools.pairwise(trained):
        assert earlier["finished_at"] <= later["started_at"]  # the lock: never two at once


async def test_a_request_whose_notice_was_missed_is_trained_for_from_the_table(
    platform: Platform, retail: Retail, second: InProcessServer
) -> None:
    """A request recorded while no worker listened (no NOTIFY reaches anyone): the worker's poll finds it."""
    connection = await asyncpg.connect(platform.env["DATABASE_URL"].replace("+asyncpg", ""))
    try:
        version = await connection.fetchval(
            "INSERT INTO recommend.training_requests (version) VALUES (nextval('recommend.model_version_seq'))"
            " RETURNING version"
        )
    finally:
        await connection.close()
    async with client(platform, second.url) as second_api:
        model = await serving(second_api, version, timeout=120)
    assert model["version"] >= version
    assert (await stored(platform))[-1]["version"] == model["version"]
