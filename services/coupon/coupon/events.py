"""Handlers of the events the coupon service consumes: the kit's router has parsed each payload into its
contract; each handler hands it to the surprise rules (coupon.rules), which decide what fires."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from coupon import rules
from coupon.rules import PurchaseMade
from coupon.runtime import CouponRuntime
from kit.contracts import PurchaseCreated, SurveyDetractor
from kit.events import Batched, Event, EventHandler, Handler


def _purchase(event: Event[PurchaseCreated]) -> PurchaseMade:
    purchase = event.payload
    return PurchaseMade(
        purchase_id=purchase.purchase_id,
        customer_id=purchase.customer_id,
        total=purchase.total,
        currency=purchase.currency,
        occurred_at=event.occurred_at,
        arrived_at=event.published_at,
    )


def handlers(runtime: CouponRuntime) -> dict[str, EventHandler]:
    async def purchases_created(session: AsyncSession, events: Sequence[Event[PurchaseCreated]]) -> None:
        await rules.purchases_made(session, runtime, [_purchase(event) for event in events])

    async def survey_detractor(session: AsyncSession, event: Event[SurveyDetractor]) -> None:
        answer = event.payload
        await rules.detractor_answered(session, runtime, str(answer.response_id), answer.customer_id, event.occurred_at)

    return {
        PurchaseCreated.type: Batched(PurchaseCreated, purchases_created),
        SurveyDetractor.type: Handler(SurveyDetractor, survey_detractor),
    }
