"""Events the survey service consumes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from kit.events import Batched, Event, EventHandler
from kit.purchases import purchase_wakes_customer
from kit.types import IDENTIFIER_PATTERN
from survey import service
from survey.schemas import EMAIL_PATTERN

log = structlog.get_logger("survey.events")


def purchase_created_handler(
    policy: service.InvitePolicy, delay_seconds: float, recent_purchase_hours: float
) -> EventHandler:
    """`purchase.created`: invite the buyer to the post-purchase survey once the delay has passed.

    A purchase without an email or not recent when it arrived (history being imported), a customer who is
    throttled or opted out, or no post-purchase survey is nothing to do; the event is still recorded as handled."""

    async def on_purchase_created(session: AsyncSession, event: Event) -> None:
        customer_id = event.payload.get("customer_id")
        email = event.payload.get("email")
        if not isinstance(customer_id, str) or not re.fullmatch(IDENTIFIER_PATTERN, customer_id):
            log.warning("survey.purchase_event_ignored", event_id=str(event.id), reason="customer_id")
            return
        if not isinstance(email, str) or len(email) > 254 or not re.fullmatch(EMAIL_PATTERN, email):
            return
        if not purchase_wakes_customer(event, recent_purchase_hours):
            log.info("survey.purchase_not_recent", event_id=str(event.id), customer_id=customer_id)
            return
        purchase_id = event.payload.get("purchase_id")
        await service.schedule_after_purchase(
            session,
            policy,
            customer_id,
            email,
            timedelta(seconds=delay_seconds),
            purchase_id=purchase_id if isinstance(purchase_id, str) and 0 < len(purchase_id) <= 64 else None,
        )

    async def on_purchases_created(session: AsyncSession, events: Sequence[Event]) -> None:
        # a history import's purchases are old: nothing to do but look at them; recent ones are scheduled in order
        for event in events:
            await on_purchase_created(session, event)

    return Batched(on_purchases_created)
