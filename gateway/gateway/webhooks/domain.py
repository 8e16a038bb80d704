"""Webhook endpoints, their secrets and their delivery logs; turning an event into deliveries.

Plain functions over a session (no FastAPI), so the API routes, the console and the event handler share them.
All SQL of the webhooks package lives here and in `gateway.webhooks.delivery`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.webhooks.signing import new_secret
from gateway.webhooks.ssrf import check_url
from gateway.webhooks.tables import webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_messages
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
    "update_endpoint",
]

_PUBLIC_COLUMNS = (
    webhook_endpoints.c.id,
    webhook_endpoints.c.url,
    webhook_endpoints.c.events,
    webhook_endpoints.c.description,
    webhook_endpoints.c.active,
    webhook_endpoints.c.disabled_at,
    webhook_endpoints.c.disabled_reason,
    webhook_endpoints.c.failing_since,
    webhook_endpoints.c.previous_secret_expires_at,
    webhook_endpoints.c.created_at,
    webhook_endpoints.c.updated_at,
)


async def _checked_url(url: str, allow_private: bool) -> str:
    problem = await check_url(url, allow_private)
    if problem is not None:
        raise ValidationFailed([FieldError("url", problem)], detail="This URL cannot receive webhooks.")
    return url


async def create_endpoint(
    session: AsyncSession, url: str, events: Sequence[str], description: str, *, allow_private: bool
) -> dict[str, Any]:
    await _checked_url(url, allow_private)
    secret = new_secret()
    row = (
        await session.execute(
            insert(webhook_endpoints)
            .values(id=uuid.uuid4(), url=url, events=list(events), description=description, secret=secret)
            .returning(*_PUBLIC_COLUMNS)
        )
    ).one()
    return {**row._mapping, "secret": secret}


async def list_endpoints(session: AsyncSession, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[Any]:
    query = select(*_PUBLIC_COLUMNS).order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(func.row(webhook_endpoints.c.created_at, webhook_endpoints.c.id) > func.row(*after))
    return list((await session.execute(query)).all())


async def get_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> Any:
    row = (await session.execute(select(*_PUBLIC_COLUMNS).where(webhook_endpoints.c.id == endpoint_id))).first()
    if row is None:
        raise NotFound("No webhook endpoint with this id.")
    return row


async def update_endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, changes: dict[str, Any], *, allow_private: bool
) -> Any:
    values: dict[str, Any] = {k: v for k, v in changes.items() if k in ("url", "events", "description")}
    if "url" in values:
        await _checked_url(values["url"], allow_private)
    if changes.get("active") is True:
        values.update(active=True, disabled_at=None, disabled_reason=None, failing_since=None)
    elif changes.get("active") is False:
        values.update(
            active=False,
            disabled_at=func.coalesce(webhook_endpoints.c.disabled_at, func.now()),
            disabled_reason=func.coalesce(webhook_endpoints.c.disabled_reason, "disabled by an administrator"),
        )
    row = (
        await session.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint_id)
            .values(**values, updated_at=func.now())
            .returning(*_PUBLIC_COLUMNS)
        )
    ).first()
    if row is None:
        raise NotFound("No webhook endpoint with this id.")
    return row


async def delete_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> None:
    """Its deliveries and their log go with it (the messages stay for other endpoints)."""
    deleted = await session.scalar(
        webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id).returning(webhook_endpoints.c.id)
    )
    if deleted is None:
        raise NotFound("No webhook endpoint with this id.")


async def rotate_secret(session: AsyncSession, endpoint_id: uuid.UUID, overlap: timedelta) -> dict[str, Any]:
    """A new secret signs from now on; the one it replaces signs alongside it for `overlap` (24 hours), so a
    partner can switch its receiver over without dropping a message. Rotating again during an overlap ends the
    oldest secret at once: two live secrets at most."""
    secret = new_secret()
    row = (
        await session.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint_id)
            .values(
                previous_secret=webhook_endpoints.c.secret,
                previous_secret_expires_at=func.now() + overlap,
                secret=secret,
                updated_at=func.now(),
            )
            .returning(webhook_endpoints.c.id, webhook_endpoints.c.previous_secret_expires_at)
        )
    ).first()
    if row is None:
        raise NotFound("No webhook endpoint with this id.")
    return {"endpoint_id": row.id, "secret": secret, "previous_secret_expires_at": row.previous_secret_expires_at}


def message_id_for(event_id: uuid.UUID) -> str:
    return f"msg_{event_id.hex}"


# One statement: nothing is written for an event no active endpoint subscribes to.
_ENQUEUE = text(
    """
    WITH targets AS (
        SELECT id FROM webhook_endpoints WHERE active AND CAST(:type AS varchar) = ANY(events)
    ), message AS (
        INSERT INTO webhook_messages (id, type, body, occurred_at)
        SELECT :id, :type, :body, :occurred_at WHERE EXISTS (SELECT 1 FROM targets)
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    )
    INSERT INTO webhook_deliveries (message_id, endpoint_id)
    SELECT message.id, targets.id FROM message, targets
    """
)


async def subscribed(session: AsyncSession, event_type: str) -> bool:
    """Whether any active endpoint wants this type: bulk producers (a purchases import) ask once, not per event."""
    found = await session.scalar(
        text("SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE active AND CAST(:type AS varchar) = ANY(events))"),
        {"type": event_type},
    )
    return bool(found)


async def enqueue(
    session: AsyncSession, event_id: uuid.UUID, event_type: str, data: dict[str, Any], occurred_at: datetime
) -> int:
    """Turn one event into a delivery per active endpoint subscribed to its type, in the caller's transaction.
    The body is fixed here, so every attempt and every endpoint gets the same bytes. Returns the deliveries."""
    model = EVENT_MODELS.get(event_type)
    if model is None:
        raise ValueError(f"not a webhook event type: {event_type!r}")
    checked = model.model_validate(data).model_dump(mode="json")
    body = dumps({"type": event_type, "timestamp": occurred_at, "data": checked})
    result = await session.execute(
        _ENQUEUE,
        {"id": message_id_for(event_id), "type": event_type, "body": body, "occurred_at": occurred_at},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


_DELIVERY_COLUMNS = (
    webhook_deliveries.c.id,
    webhook_deliveries.c.endpoint_id,
    webhook_deliveries.c.message_id,
    webhook_messages.c.type.label("event_type"),
    webhook_deliveries.c.status,
    webhook_deliveries.c.attempts,
    webhook_deliveries.c.next_attempt_at,
    webhook_deliveries.c.created_at,
    webhook_deliveries.c.delivered_at,
    webhook_deliveries.c.last_status_code,
    webhook_deliveries.c.last_error,
)


async def list_deliveries(
    session: AsyncSession, endpoint_id: uuid.UUID, status: str | None, limit: int, after: tuple[int] | None
) -> list[dict[str, Any]]:
    """Newest first, each with its attempts (oldest first); `after` is the last row's id."""
    await get_endpoint(session, endpoint_id)
    query = (
        select(*_DELIVERY_COLUMNS)
        .join(webhook_messages, webhook_messages.c.id == webhook_deliveries.c.message_id)
        .where(webhook_deliveries.c.endpoint_id == endpoint_id)
        .order_by(webhook_deliveries.c.id.desc())
        .limit(limit + 1)
    )
    if status:
        query = query.where(webhook_deliveries.c.status == status)
    if after is not None:
        query = query.where(webhook_deliveries.c.id < after[0])
    rows = [dict(r._mapping) for r in (await session.execute(query)).all()]
    if not rows:
        return rows
    attempts = await session.execute(
        select(webhook_attempts)
        .where(webhook_attempts.c.delivery_id.in_([r["id"] for r in rows]))
        .order_by(webhook_attempts.c.id)
    )
    by_delivery: dict[int, list[dict[str, Any]]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.delivery_id, []).append(dict(attempt._mapping))
    for row in rows:
        row["attempt_log"] = by_delivery.get(row["id"], [])
        if row["status"] != "pending":
            row["next_attempt_at"] = None
    return rows


async def redrive(session: AsyncSession, delivery_id: int) -> dict[str, Any]:
    """Send a delivery again now, whatever its state, with a fresh retry window; same `webhook-id`."""
    endpoint_active = await session.scalar(
        select(webhook_endpoints.c.active)
        .join(webhook_deliveries, webhook_deliveries.c.endpoint_id == webhook_endpoints.c.id)
        .where(webhook_deliveries.c.id == delivery_id)
    )
    if endpoint_active is None:
        raise NotFound("No webhook delivery with this id.")
    if not endpoint_active:
        raise Conflict(
            "The endpoint is disabled; re-enable it (PATCH active=true) before re-driving.", code="endpoint_disabled"
        )
    await session.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(status="pending", next_attempt_at=func.now(), retry_from=func.now(), delivered_at=None)
    )
    return {"delivery_id": delivery_id, "status": "pending"}
