"""A purchase followed across the platform: real processes (each logging to a file of its own), a purchase posted
with an `X-Request-ID`, and that id found in the gateway's log and in a log line of every consumer that handled
the purchase's event. The buyer's address is beyond ASCII (`josé@...`), which the gateway accepts: the survey
service invites them like any other buyer, and the invitation reaches the mailbox."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.conftest import ADMIN_KEY, ARTIFACTS
from tests.loop.helpers import purchase_body, wait_for_deliveries
from tests.support.database import create_database, drop_database, server_url
from tests.support.mail import Mailbox
from tests.support.servers import ServiceProcess
from tests.support.stack import process_stack
from tests.survey.conftest import create_survey

CONSUMERS = ("points", "coupon", "recommend", "survey")


@pytest.fixture(scope="module")
async def stack(platform_env: dict[str, str], mailbox: Mailbox) -> AsyncIterator[dict[str, ServiceProcess]]:
    base = await asyncio.to_thread(server_url)
    database_url, name = await create_database(base)
    logs = ARTIFACTS / "logs" / f"trace-{uuid4().hex[:8]}"
    env = {
        **platform_env,
        "DATABASE_URL": database_url,
        # the lines that name a request's work (the gateway's request line, a consumer's event handling) are DEBUG
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
        "POST_PURCHASE_SURVEY_DELAY_SECONDS": "0",
    }
    try:
        # five processes migrating a fresh database one after another: slow on a loaded machine
        async with process_stack(env, logs, ready_timeout=180) as processes:
            yield processes
    finally:
        await drop_database(base, name)


def lines_naming(log_path: Path, request_id: str) -> list[dict[str, Any]]:
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("request_id") == request_id:
            found.append(entry)
    return found


async def test_a_purchase_is_followed_by_its_request_id(stack: dict[str, ServiceProcess], mailbox: Mailbox) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=stack["gateway"].url, headers=headers, timeout=30) as client:
        await create_survey(client, name=f"after-purchase-{uuid4().hex[:6]}", send_after_purchase=True)
        recipient = f"josé.{uuid4().hex[:8]}@example.com"
        body = purchase_body(total="25.00", email=recipient)
        request_id = f"trace-{uuid4().hex}"
        response = await client.post("/v1/purchases", json=body, headers={"X-Request-ID": request_id})
        assert response.status_code == 202, response.text
        assert response.headers["x-request-id"] == request_id
        deliveries = await wait_for_deliveries(client, body["purchase_id"])
        assert deliveries == dict.fromkeys(CONSUMERS, "delivered")

    [invitation] = await mailbox.wait_for(recipient, timeout=30)
    assert recipient in str(invitation["To"])

    deadline = time.monotonic() + 10
    missing: list[str] = list(stack)
    while missing and time.monotonic() < deadline:  # a line may still be on its way to the file
        missing = [name for name, process in stack.items() if not lines_naming(process.log_path, request_id)]
        await asyncio.sleep(0.2)
    assert missing == [], f"no log line of {missing} names {request_id}"
    for consumer in CONSUMERS:
        handled = [e for e in lines_naming(stack[consumer].log_path, request_id) if e["event"] == "events.handling"]
        assert [e["type"] for e in handled] == ["purchase.created"], consumer
