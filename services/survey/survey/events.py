"""Events the survey service consumes (payloads parsed into their contracts by the kit's router)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from kit.contracts import PurchaseCreated
from kit.events import Batched, Event, EventHandler
from kit.purchases import purchase_wakes_customer
from survey import service

log = structlog.get_logger("survey.events")


def purchase_created_handler(
    policy: service.InvitePolicy, delay_seconds: float, recent_purchase_hours: float
) -> EventHandler:
    """`purchase.created`: invite the buyer to the post-purchase survey once the delay has passed.

    A purchase without an email or not recent when it arrived (history being imported), a customer who is
    throttled or opted out, or no post-purchase survey is nothing to do; the event is still recorded as handled."""

    async def on_purchase_created(session: AsyncSession, event: Event[PurchaseCreated]) -> None:
        purchase = event.payload
        if purchase.email is None:
            return
        if not purchase_wakes_customer(event, recent_purchase_hours):
            log.info("survey.purchase_not_recent", event_id=str(event.id), customer_id=purchase.customer_id)
            return
        await service.schedule_after_purchase(
            session,
            policy,
            purchase.customer_id,
            purchase.email,
            timedelta(seconds=delay_seconds),
            purchase_id=purchase.purchase_id,
        )

    async def on_purchases_created(session: AsyncSession, events: Sequence[Event[PurchaseCreated]]) -> None:
        # a history import's purchases are old: nothing to do but look at them; recent ones are scheduled in order
        for event in events:
            await on_purchase_created(session, event)

    return Batched(PurchaseCreated, on_purchases_created)
