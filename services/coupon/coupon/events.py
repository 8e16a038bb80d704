"""Handlers of the events the coupon service consumes: each reads its payload and hands it to the surprise
rules (coupon.rules), which decide what fires."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from coupon import rules
from coupon.rules import PurchaseMade
from coupon.runtime import CouponRuntime
from kit.events import Batched, Event, EventHandler

log = structlog.get_logger("coupon.events")


def _time(payload: Mapping[str, Any], name: str, default: datetime) -> datetime:
    """The business time of what fired a rule (a purchase's `occurred_at`), for experiments."""
    value = payload.get(name)
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else default
    except ValueError:
        moment = default
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


def _purchase(event: Event) -> PurchaseMade | None:
    purchase_id = _text(event.payload, "purchase_id")
    customer_id = _text(event.payload, "customer_id")
    try:
        total: Decimal | None = Decimal(str(event.payload.get("total")))
    except InvalidOperation:
        total = None
    if total is not None and not total.is_finite():
        total = None
    if purchase_id is None or customer_id is None:
        log.warning("coupon.purchase.ignored", event_id=str(event.id), reason="missing ids")
        return None
    currency = event.payload.get("currency")
    return PurchaseMade(
        purchase_id=purchase_id,
        customer_id=customer_id,
        total=total,
        currency=currency if isinstance(currency, str) else None,
        occurred_at=_time(event.payload, "occurred_at", event.occurred_at),
        arrived_at=event.occurred_at,
    )


def handlers(runtime: CouponRuntime) -> dict[str, EventHandler]:
    async def purchases_created(session: AsyncSession, events: Sequence[Event]) -> None:
        purchases = [p for p in map(_purchase, events) if p is not None]
        await rules.purchases_made(session, runtime, purchases)

    async def survey_detractor(session: AsyncSession, event: Event) -> None:
        response_id = _text(event.payload, "response_id") or str(event.payload.get("response_id") or "")
        customer_id = _text(event.payload, "customer_id")
        if not response_id or customer_id is None:
            log.warning("coupon.detractor.ignored", event_id=str(event.id), reason="missing ids")
            return
        submitted_at = _time(event.payload, "submitted_at", event.occurred_at)
        await rules.detractor_answered(session, runtime, response_id, customer_id, submitted_at)

    return {"purchase.created": Batched(purchases_created), "survey.detractor": survey_detractor}
