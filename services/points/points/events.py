"""Handlers for the events the points service consumes (each event id is handled once, its payload parsed into
its contract by the kit's router).

A refusal by the rules is nothing to do; a refund whose purchase has not been earned yet raises a 409, which
the publisher's relay retries with backoff (the two deliveries travel independently, so a refund may arrive
first).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from kit.contracts import GiftGranted, PurchaseCreated, PurchaseRefunded, SurveyResponded
from kit.errors import Conflict, NotFound
from kit.events import Batched, Event, EventHandler, Handler
from points import rewards, service


async def _on_purchases_created(session: AsyncSession, events: Sequence[Event[PurchaseCreated]]) -> None:
    await service.earn_for_purchases(session, [(event.payload, event.occurred_at) for event in events])


async def _on_purchase_refunded(session: AsyncSession, event: Event[PurchaseRefunded]) -> None:
    try:
        await service.reverse_refund(session, event.payload)
    except NotFound as exc:
        raise Conflict(
            "The purchase's points are not recorded yet; retry later.", code="purchase_not_earned_yet"
        ) from exc


async def _on_survey_responded(session: AsyncSession, event: Event[SurveyResponded]) -> None:
    response = event.payload
    await service.earn_survey_reward(session, response.customer_id, str(response.invitation_id), response.reward_points)


async def _on_gift_granted(session: AsyncSession, event: Event[GiftGranted]) -> None:
    await rewards.grant_gift(session, event.payload)


HANDLERS: dict[str, EventHandler] = {
    # a batch's run of purchases is earned set-based (service.earn_for_purchases), one alone as before
    PurchaseCreated.type: Batched(PurchaseCreated, _on_purchases_created),
    PurchaseRefunded.type: Handler(PurchaseRefunded, _on_purchase_refunded),
    SurveyResponded.type: Handler(SurveyResponded, _on_survey_responded),
    GiftGranted.type: Handler(GiftGranted, _on_gift_granted),
}
