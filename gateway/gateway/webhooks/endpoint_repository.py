"""The SQL of webhook endpoints, of turning an event into deliveries, and of reading and re-driving the delivery log.
(The delivery engine's own SQL, claiming and recording attempts, is the dispatcher's: `gateway.webhooks.delivery`.)"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.webhooks.schemas import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from gateway.webhooks.tables import webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_messages

__all__ = [
    "any_subscribed",
    "attempts_of",
    "delete_endpoint",
    "deliveries_page",
    "delivery_endpoint_active",
    "endpoints_page",
    "find_endpoint",
    "insert_endpoint",
    "insert_message",
    "redrive",
    "rotate_secret",
    "update_endpoint",
]


_ENDPOINT_COLUMNS = tuple(webhook_endpoints.c[name] for name in WebhookEndpoint.model_fields)
_DELIVERY_COLUMNS = tuple(
    webhook_messages.c.type.label("event_type") if name == "event_type" else webhook_deliveries.c[name]
    for name in WebhookDelivery.model_fields
    if name != "attempt_log"
)
_ATTEMPT_COLUMNS = tuple(webhook_attempts.c[name] for name in WebhookAttempt.model_fields)


async def insert_endpoint(
    session: AsyncSession, url: str, events: list[str], description: str, secret: str
) -> WebhookEndpoint:
    statement = (
        insert(webhook_endpoints)
        .values(id=uuid.uuid4(), url=url, events=events, description=description, secret=secret)
        .returning(*_ENDPOINT_COLUMNS)
    )
    return WebhookEndpoint.model_validate((await session.execute(statement)).one()._mapping)


async def endpoints_page(
    session: AsyncSession, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[WebhookEndpoint]:
    """Oldest first, `limit + 1` rows (the extra one tells the caller a next page exists)."""
    query = select(*_ENDPOINT_COLUMNS).order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(func.row(webhook_endpoints.c.created_at, webhook_endpoints.c.id) > func.row(*after))
    return [WebhookEndpoint.model_validate(row._mapping) for row in await session.execute(query)]


async def find_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
    row = (await session.execute(select(*_ENDPOINT_COLUMNS).where(webhook_endpoints.c.id == endpoint_id))).first()
    return WebhookEndpoint.model_validate(row._mapping) if row else None


async def update_endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, changes: dict[str, Any], active: bool | None
) -> WebhookEndpoint | None:
    """`changes` of url, events, description; `active` true clears a disabling, false keeps the first one's time
    and reason."""
    values = dict(changes)
    if active is True:
        values.update(active=True, disabled_at=None, disabled_reason=None, failing_since=None)
    elif active is False:
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
            .returning(*_ENDPOINT_COLUMNS)
        )
    ).first()
    return WebhookEndpoint.model_validate(row._mapping) if row else None


async def delete_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> bool:
    """Whether there was such an endpoint; its deliveries and their log go with it (foreign keys cascade)."""
    deleted = await session.scalar(
        webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id).returning(webhook_endpoints.c.id)
    )
    return deleted is not None


async def rotate_secret(
    session: AsyncSession, endpoint_id: uuid.UUID, secret: str, overlap: timedelta
) -> datetime | None:
    """Until when the replaced secret keeps signing; None if there is no such endpoint."""
    return await session.scalar(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(
            previous_secret=webhook_endpoints.c.secret,
            previous_secret_expires_at=func.now() + overlap,
            secret=secret,
            updated_at=func.now(),
        )
        .returning(webhook_endpoints.c.previous_secret_expires_at)
    )


# One statement: nothing is written for an event no active endpoint subscribes to.
_INSERT_MESSAGE = text(
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


async def insert_message(
    session: AsyncSession, message_id: str, event_type: str, body: bytes, occurred_at: datetime
) -> int:
    """The message and one delivery per active endpoint subscribed to its type; returns the deliveries."""
    result = await session.execute(
        _INSERT_MESSAGE, {"id": message_id, "type": event_type, "body": body, "occurred_at": occurred_at}
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def any_subscribed(session: AsyncSession, event_type: str) -> bool:
    found = await session.scalar(
        text("SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE active AND CAST(:type AS varchar) = ANY(events))"),
        {"type": event_type},
    )
    return bool(found)


async def deliveries_page(
    session: AsyncSession, endpoint_id: uuid.UUID, status: str | None, limit: int, after: tuple[int] | None
) -> list[WebhookDelivery]:
    """Newest first, `limit + 1` rows, each with no attempts; `after` is the last row's id."""
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
    return [WebhookDelivery(**row._mapping, attempt_log=[]) for row in await session.execute(query)]


async def attempts_of(session: AsyncSession, delivery_ids: list[int]) -> list[tuple[int, WebhookAttempt]]:
    """Each attempt with its delivery's id, oldest first."""
    query = (
        select(webhook_attempts.c.delivery_id, *_ATTEMPT_COLUMNS)
        .where(webhook_attempts.c.delivery_id.in_(delivery_ids))
        .order_by(webhook_attempts.c.id)
    )
    return [(row.delivery_id, WebhookAttempt.model_validate(row._mapping)) for row in await session.execute(query)]


async def delivery_endpoint_active(session: AsyncSession, delivery_id: int) -> bool | None:
    """Whether the delivery's endpoint is active; None if there is no such delivery."""
    return await session.scalar(
        select(webhook_endpoints.c.active)
        .join(webhook_deliveries, webhook_deliveries.c.endpoint_id == webhook_endpoints.c.id)
        .where(webhook_deliveries.c.id == delivery_id)
    )


async def redrive(session: AsyncSession, delivery_id: int) -> None:
    """Due now, with a fresh retry window."""
    await session.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(status="pending", next_attempt_at=func.now(), retry_from=func.now(), delivered_at=None)
    )
