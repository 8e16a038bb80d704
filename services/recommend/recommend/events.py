"""Handlers of the events the recommend service consumes."""

from sqlalchemy.ext.asyncio import AsyncSession

from kit.events import Event
from recommend import service


async def purchase_created(session: AsyncSession, event: Event) -> None:
    await service.record_purchase(session, event)
