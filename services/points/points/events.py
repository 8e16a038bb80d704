"""Handlers for the events the points service consumes (each event id is handled once, by the kit).

A payload that cannot be read, or a refusal by the rules, is nothing to do; a refund whose purchase has not
been earned yet raises a 409, which the publisher's relay retries with backoff (the two deliveries travel
independently, so a refund may arrive first).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from kit.errors import Conflict, NotFound
from kit.events import Batched, Event, EventHandler
from kit.types import MAX_POINTS
from points import rewards, service
from points.schemas import GiftGranted, PurchaseCreated, PurchaseRefunded, SurveyResponded

log = structlog.get_logger("points.events")


async def _on_purchases_created(session: AsyncSession, events: Sequence[Event]) -> None:
    purchases = []
    for event in events:
        try:
            purchases.append(PurchaseCreated.model_validate(event.payload))
        except ValidationError as exc:
            log.warning("points.event.ignored", event_id=str(event.id), type=event.type, reason=str(exc)[:300])
    await service.earn_for_purchases(session, purchases)


# a batch's run of purchases is earned set-based (service.earn_for_purchases), one alone as before
on_purchase_created = Batched(_on_purchases_created)


async def on_purchase_refunded(session: AsyncSession, event: Event) -> None:
    try:
        refund = PurchaseRefunded.model_validate(event.payload)
    except ValidationError as exc:
        log.warning("points.event.ignored", event_id=str(event.id), type=event.type, reason=str(exc)[:300])
        return
    try:
        await service.reverse_refund(session, refund)
    except NotFound as exc:
        raise Conflict(
            "The purchase's points are not recorded yet; retry later.", code="purchase_not_earned_yet"
        ) from exc


async def on_survey_responded(session: AsyncSession, event: Event) -> None:
    try:
        response = SurveyResponded.model_validate(event.payload)
    except ValidationError as exc:
        log.warning("points.event.ignored", event_id=str(event.id), type=event.type, reason=str(exc)[:300])
        return
    if not response.reward_points or not 0 < response.reward_points < MAX_POINTS:
        return
    await service.earn_survey_reward(session, response.customer_id, response.invitation_id, response.reward_points)


async def on_gift_granted(session: AsyncSession, event: Event) -> None:
    try:
        gift = GiftGranted.model_validate(event.payload)
    except ValidationError as exc:
        log.warning("points.event.ignored", event_id=str(event.id), type=event.type, reason=str(exc)[:300])
        return
    await rewards.grant_gift(session, gift)


HANDLERS: dict[str, EventHandler] = {
    "purchase.created": on_purchase_created,
    "purchase.refunded": on_purchase_refunded,
    "survey.responded": on_survey_responded,
    "reward.gift_granted": on_gift_granted,
}
