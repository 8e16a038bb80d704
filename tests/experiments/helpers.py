"""Factories and waits shared by the experiments tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx

from kit.experiments import assign_arm


def uid(prefix: str = "x") -> str:
    return f"{prefix}-{uuid4().hex[:12]}"


def an_hour_ago() -> str:
    return (datetime.now(UTC) - timedelta(hours=1)).isoformat()


async def start(
    client: httpx.AsyncClient, lever_type: str, lever_id: str, holdout: int = 50, **extra: Any
) -> dict[str, Any]:
    body = {
        "name": f"test {uid()}",
        "lever": {"type": lever_type, "id": lever_id},
        "holdout_percent": holdout,
        "starts_at": an_hour_ago(),
        **extra,
    }
    response = await client.post("/v1/experiments", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def customers_by_arm(experiment: dict[str, Any], count: int, prefix: str = "c") -> dict[str, list[str]]:
    """`count` fresh customers of each arm of the experiment."""
    arms: dict[str, list[str]] = {"treatment": [], "holdout": []}
    while min(len(v) for v in arms.values()) < count:
        customer = uid(prefix)
        arm = assign_arm(experiment["id"], customer, experiment["holdout_percent"])
        if len(arms[arm]) < count:
            arms[arm].append(customer)
    return arms


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what} not reached after {timeout} s")


async def results(client: httpx.AsyncClient, experiment_id: str, window_days: int = 30) -> dict[str, Any]:
    response = await client.get(f"/v1/experiments/{experiment_id}/results", params={"window_days": window_days})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def wait_exposed(client: httpx.AsyncClient, experiment_id: str, count: int) -> dict[str, Any]:
    """Until the gateway has heard of `count` exposures (services report them through their outbox)."""
    found: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal found
        found = await results(client, experiment_id)
        return sum(a["customers_exposed"] for a in found["arms"].values()) >= count

    await eventually(check, what=f"{count} exposures")
    return found
