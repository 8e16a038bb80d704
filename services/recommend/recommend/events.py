"""Handlers of the events the recommend service consumes."""

from sqlalchemy.ext.asyncio import AsyncSession

from kit.events import Event
from recommend import service


async def purchase_created(session: AsyncSession, event: Event) -> None:
    await service.record_purchase(session, event)


async def purchase_refunded(session: AsyncSession, event: Event) -> None:
    await service.record_refund(session, event)


async def survey_detractor(session: AsyncSession, event: Event) -> None:
    await service.record_detractor(session, event)


async def survey_preference(session: AsyncSession, event: Event) -> None:
    await service.record_preference(session, event)
