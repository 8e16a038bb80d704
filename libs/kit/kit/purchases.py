"""What a purchase may cause, judged by its own time (contract v1.1, "A purchase's own time rules what it causes").

Every purchase earns points, counts toward tiers and feeds recommendations whatever its age; only what reaches
the customer (a surprise coupon or gift, a post-purchase survey invitation) follows a *recent* purchase, one
whose `occurred_at` is at most `RECENT_PURCHASE_HOURS` before the gateway accepted it. That is what lets a shop
import years of history without mailing anyone about orders they have forgotten.

The purchase's time is its event's business time (`Event.occurred_at`); the arrival time is the event's
`published_at` (the moment the gateway committed the purchase), not the moment a consumer happens to receive
it: a delivery retried for an hour still wakes the customer of a purchase that was recent when it arrived.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kit.contracts import PurchaseCreated
    from kit.events import Event

__all__ = ["is_recent", "purchase_wakes_customer", "utc"]


def utc(moment: datetime) -> datetime:
    """A naive time from a payload is taken as UTC, as the contract says all times are."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_recent(occurred_at: datetime, arrived_at: datetime, recent_hours: float) -> bool:
    """Whether a purchase may still reach its customer: it happened at most `recent_hours` before it arrived.

    A purchase dated after its arrival (a till whose clock runs fast) is recent."""
    return utc(arrived_at) - utc(occurred_at) <= timedelta(hours=recent_hours)


def purchase_wakes_customer(event: Event[PurchaseCreated], recent_hours: float) -> bool:
    """For a `purchase.created` event: whether its purchase was recent when the gateway accepted it."""
    return is_recent(event.occurred_at, event.published_at, recent_hours)
