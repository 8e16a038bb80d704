"""The gateway's consumer side of webhook events: each event from a service's outbox becomes deliveries."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.webhooks import domain
from kit.events import Event, EventHandler
from kit.webhooks import EVENT_TYPES

__all__ = ["HANDLERS"]


async def _enqueue(session: AsyncSession, event: Event) -> None:
    await domain.enqueue(session, event.id, event.type, event.payload, event.occurred_at)


HANDLERS: dict[str, EventHandler] = dict.fromkeys(EVENT_TYPES, _enqueue)
