"""The gateway's consumer side of webhook events: each event from a service's outbox becomes deliveries."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.webhooks import domain
from kit.events import Event, EventHandler, Handler
from kit.webhooks import EVENT_MODELS, WebhookEvent

__all__ = ["HANDLERS"]


async def _enqueue(session: AsyncSession, event: Event[WebhookEvent]) -> None:
    # the webhook's `timestamp` is when the service published the change, as it always was
    await domain.enqueue(session, event.id, event.type, event.payload.model_dump(mode="json"), event.published_at)


HANDLERS: dict[str, EventHandler] = {type_: Handler(model, _enqueue) for type_, model in EVENT_MODELS.items()}
