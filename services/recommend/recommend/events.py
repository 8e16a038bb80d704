"""Handlers of the events the recommend service consumes (payloads parsed into their contracts by the kit)."""

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from kit.contracts import PurchaseCreated, PurchaseRefunded, SurveyDetractor, SurveyPreference
from kit.events import Batched, Event, EventHandler, Handler
from recommend import service


async def _purchases_created(session: AsyncSession, events: Sequence[Event[PurchaseCreated]]) -> None:
    await service.record_purchases(session, [(event.payload, event.occurred_at) for event in events])


async def _purchase_refunded(session: AsyncSession, event: Event[PurchaseRefunded]) -> None:
    await service.record_refund(session, event.payload)


async def _survey_detractor(session: AsyncSession, event: Event[SurveyDetractor]) -> None:
    await service.record_detractor(session, event.payload)


async def _survey_preference(session: AsyncSession, event: Event[SurveyPreference]) -> None:
    await service.record_preference(session, event.payload)


HANDLERS: dict[str, EventHandler] = {
    PurchaseCreated.type: Batched(PurchaseCreated, _purchases_created),
    PurchaseRefunded.type: Handler(PurchaseRefunded, _purchase_refunded),
    SurveyDetractor.type: Handler(SurveyDetractor, _survey_detractor),
    SurveyPreference.type: Handler(SurveyPreference, _survey_preference),
}
