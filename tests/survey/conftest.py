"""Helpers for the survey tests: surveys and invitations made over HTTP, the emailed link, and a look into
the survey schema where a user-visible effect has no API (the outbox rows)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import asyncpg
import httpx
import pytest

LINK = re.compile(r"(https?://[^\s<>\"]+/s/([A-Za-z0-9_-]+))(?![A-Za-z0-9_/-])")

NPS_AND_RATING = [
    {"id": "nps", "type": "nps", "text": "How likely are you to recommend us to a friend?", "required": True},
    {"id": "csat", "type": "rating", "text": "How satisfied are you with your purchase?", "required": False},
    {"id": "why", "type": "text", "text": "What could we do better?", "required": False},
    {
        "id": "channel",
        "type": "choice",
        "text": "Where did you hear about us?",
        "required": False,
        "options": ["A friend", "Search", "Social media"],
    },
]


def uid(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def address() -> str:
    return f"{uuid.uuid4().hex[:12]}@example.com"


async def create_survey(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body = {"name": "How did we do?", "questions": NPS_AND_RATING, "reward_points": 50, "cooldown_days": 0}
    body.update(overrides)
    response = await client.post("/v1/surveys", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def invite(
    client: httpx.AsyncClient, survey_id: str, customer_id: str | None = None, email: str | None = None
) -> httpx.Response:
    body = {"customer_id": customer_id or uid(), "email": email or address()}
    return await client.post(f"/v1/surveys/{survey_id}/invitations", json=body)


def links(message: EmailMessage) -> tuple[str, str]:
    """(survey link, token) from the plain-text part."""
    part = message.get_body(("plain",))
    assert part is not None
    found = LINK.search(part.get_content())
    assert found, part.get_content()
    return found.group(1), found.group(2)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "survey"})
    yield connection
    await connection.close()
