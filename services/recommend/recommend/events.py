"""Handlers of the events the recommend service consumes."""

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from kit.events import Batched, Event
from recommend import service


async def _purchases_created(session: AsyncSession, events: Sequence[Event]) -> None:
    await service.record_purchases(session, events)


purchase_created = Batched(_purchases_created)


async def purchase_refunded(session: AsyncSession, event: Event) -> None:
    await service.record_refund(session, event)


async def survey_detractor(session: AsyncSession, event: Event) -> None:
    await service.record_detractor(session, event)


async def survey_preference(session: AsyncSession, event: Event) -> None:
    await service.record_preference(session, event)
