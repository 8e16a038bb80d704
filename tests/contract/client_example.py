import asyncio
from collections.abc import Collection
from datetime import UTC, datetime
from typing import TypeVar

from reciprocity_client import AuthenticatedClient
from reciprocity_client.api.customers import get_customer_overview
from reciprocity_client.api.purchases import create_purchase, get_purchase
from reciprocity_client.models import (
    CustomerOverview,
    Problem,
    Purchase,
    PurchaseAccepted,
    PurchaseCreate,
    PurchaseItem,
)

T = TypeVar("T")


def ok(answer: T | Problem | None) -> T:
    """Every documented error is a `Problem` (RFC 9457): its `code` is the stable word to act on."""
    if isinstance(answer, Problem):
        raise RuntimeError(f"{answer.status} {answer.code}: {answer.detail}")
    if answer is None:
        raise RuntimeError("no answer")
    return answer


async def record_purchase(
    client: AuthenticatedClient, purchase_id: str, customer_id: str, occurred_at: datetime
) -> PurchaseAccepted:
    purchase = PurchaseCreate(
        purchase_id=purchase_id,  # sending it again is safe: same body, same answer
        customer_id=customer_id,
        email=f"{customer_id}@example.com",  # a survey invitation may follow
        occurred_at=occurred_at,
        currency="GBP",
        total="25.50",
        items=[
            PurchaseItem(
                product_id="22423",
                name="Regency cakestand 3 tier",
                category="Kitchen",
                unit_price="12.75",
                quantity=2,
            )
        ],
    )
    return ok(await create_purchase.asyncio(client=client, body=purchase))


SERVICES = ("points", "coupon", "recommend", "survey")


async def wait_until_delivered(
    client: AuthenticatedClient, purchase_id: str, services: Collection[str] = SERVICES, timeout: float = 30
) -> Purchase:
    """The purchase is accepted at once; points, coupons, recommendations and surveys receive it shortly after."""
    async with asyncio.timeout(timeout):
        while True:
            purchase = ok(await get_purchase.asyncio(client=client, purchase_id=purchase_id))
            states = purchase.deliveries.additional_properties
            if all(states.get(service) == "delivered" for service in services):
                return purchase
            await asyncio.sleep(0.2)


async def purchase_then_overview(
    base_url: str,
    api_key: str,
    purchase_id: str,
    customer_id: str,
    occurred_at: datetime | None = None,
    services: Collection[str] = SERVICES,
) -> tuple[PurchaseAccepted, Purchase, CustomerOverview]:
    async with AuthenticatedClient(base_url=base_url, token=api_key, raise_on_unexpected_status=True) as client:
        accepted = await record_purchase(client, purchase_id, customer_id, occurred_at or datetime.now(UTC))
        purchase = await wait_until_delivered(client, purchase_id, services)
        overview = ok(await get_customer_overview.asyncio(client=client, customer_id=customer_id))
        return accepted, purchase, overview
