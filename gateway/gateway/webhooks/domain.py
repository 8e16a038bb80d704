"""Webhook endpoints, their secrets and their delivery logs; turning an event into deliveries.

Plain functions over a session (no FastAPI), so the API routes, the console and the event handler share them.
Their SQL is in `gateway.webhooks.endpoint_repository`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.webhooks import endpoint_repository as repository
from gateway.webhooks.schemas import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointCreated,
    WebhookSecret,
)
from gateway.webhooks.signing import new_secret
from gateway.webhooks.ssrf import check_url
from kit.errors import Conflict, FieldError, NotFound, ValidationFailed
from kit.json import dumps
from kit.webhooks import EVENT_MODELS

__all__ = [
    "create_endpoint",
    "delete_endpoint",
    "enqueue",
    "get_endpoint",
    "list_deliveries",
    "list_endpoints",
    "message_id_for",
    "redrive",
    "rotate_secret",
    "subscribed",
    "update_endpoint",
]


_NO_ENDPOINT = "No webhook endpoint with this id."


async def _checked_url(url: str, allow_private: bool) -> str:
    problem = await check_url(url, allow_private)
    if problem is not None:
        raise ValidationFailed([FieldError("url", problem)], detail="This URL cannot receive webhooks.")
    return url


async def create_endpoint(
    session: AsyncSession, url: str, events: Sequence[str], description: str, *, allow_private: bool
) -> WebhookEndpointCreated:
    await _checked_url(url, allow_private)
    secret = new_secret()
    row = await repository.insert_endpoint(session, url, list(events), description, secret)
    return WebhookEndpointCreated(**row.model_dump(), secret=secret)


async def list_endpoints(
    session: AsyncSession, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[WebhookEndpoint]:
    return await repository.endpoints_page(session, limit, after)


async def get_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    row = await repository.find_endpoint(session, endpoint_id)
    if row is None:
        raise NotFound(_NO_ENDPOINT)
    return row


async def update_endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, changes: dict[str, Any], *, allow_private: bool
) -> WebhookEndpoint:
    values: dict[str, Any] = {k: v for k, v in changes.items() if k in ("url", "events", "description")}
    if "url" in values:
        await _checked_url(values["url"], allow_private)
    row = await repository.update_endpoint(session, endpoint_id, values, changes.get("active"))
    if row is None:
        raise NotFound(_NO_ENDPOINT)
    return row


async def delete_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> None:
    """Its deliveries and their log go with it (the messages stay for other endpoints)."""
    if not await repository.delete_endpoint(session, endpoint_id):
        raise NotFound(_NO_ENDPOINT)


async def rotate_secret(session: AsyncSession, endpoint_id: uuid.UUID, overlap: timedelta) -> WebhookSecret:
    """A new secret signs from now on; the one it replaces signs alongside it for `overlap` (24 hours), so a
    partner can switch its receiver over without dropping a message. Rotating again during an overlap ends the
    oldest secret at once: two live secrets at most."""
    secret = new_secret()
    previous_expires_at = await repository.rotate_secret(session, endpoint_id, secret, overlap)
    if previous_expires_at is None:
        raise NotFound(_NO_ENDPOINT)
    return WebhookSecret(endpoint_id=endpoint_id, secret=secret, previous_secret_expires_at=previous_expires_at)


def message_id_for(event_id: uuid.UUID) -> str:
    return f"msg_{event_id.hex}"


async def subscribed(session: AsyncSession, event_type: str) -> bool:
    """Whether any active endpoint wants this type: bulk producers (a purchases import) ask once, not per event."""
    return await repository.any_subscribed(session, event_type)


async def enqueue(
    session: AsyncSession, event_id: uuid.UUID, event_type: str, data: dict[str, Any], occurred_at: datetime
) -> int:
    """Turn one event into a delivery per active endpoint subscribed to its type, in the caller's transaction
    (nothing is written when none is). The body is fixed here, so every attempt and every endpoint gets the same
    bytes. Returns the deliveries."""
    model = EVENT_MODELS.get(event_type)
    if model is None:
        raise ValueError(f"not a webhook event type: {event_type!r}")
    checked = model.model_validate(data).model_dump(mode="json")
    body = dumps({"type": event_type, "timestamp": occurred_at, "data": checked})
    return await repository.insert_message(session, message_id_for(event_id), event_type, body, occurred_at)


async def list_deliveries(
    session: AsyncSession, endpoint_id: uuid.UUID, status: str | None, limit: int, after: tuple[int] | None
) -> list[WebhookDelivery]:
    """Newest first, each with its attempts (oldest first); `after` is the last row's id."""
    await get_endpoint(session, endpoint_id)
    rows = await repository.deliveries_page(session, endpoint_id, status, limit, after)
    if not rows:
        return []
    by_delivery: dict[int, list[WebhookAttempt]] = {}
    for delivery_id, attempt in await repository.attempts_of(session, [row.id for row in rows]):
        by_delivery.setdefault(delivery_id, []).append(attempt)
    return [
        row.model_copy(
            update={
                "attempt_log": by_delivery.get(row.id, []),
                "next_attempt_at": row.next_attempt_at if row.status == "pending" else None,
            }
        )
        for row in rows
    ]


async def redrive(session: AsyncSession, delivery_id: int) -> dict[str, Any]:
    """Send a delivery again now, whatever its state, with a fresh retry window; same `webhook-id`."""
    endpoint_active = await repository.delivery_endpoint_active(session, delivery_id)
    if endpoint_active is None:
        raise NotFound("No webhook delivery with this id.")
    if not endpoint_active:
        raise Conflict(
            "The endpoint is disabled; re-enable it (PATCH active=true) before re-driving.", code="endpoint_disabled"
        )
    await repository.redrive(session, delivery_id)
    return {"delivery_id": delivery_id, "status": "pending"}
