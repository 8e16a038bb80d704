"""A purchase's own time rules what it earns (contract v1.1): its lot expires `expires_after_days` after its
`occurred_at`, and its tier multiplier comes from the qualifying points of the 365 days before it, whenever
it arrives. Events go straight to the service's /internal/events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.points.conftest import balance, ledger, new_id
from tests.points.test_earning_and_events import deliver, event, purchase

TIERS = [
    {"name": "base", "threshold": 0, "earn_multiplier": 1},
    {"name": "silver", "threshold": 100, "earn_multiplier": 2},
]


def days_ago(days: int) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)


@pytest.mark.own_platform(services=["points"])
async def test_tiers_and_expiry_follow_the_purchase_own_time(points: httpx.AsyncClient) -> None:
    assert (await points.put("/v1/points/tiers", json=TIERS)).status_code == 200
    customer = new_id()
    first = purchase(customer, "150.00", occurred_at=days_ago(600).isoformat())
    await deliver(points, event("purchase.created", first))
    # 100 days after the first: its 150 points count toward this one's tier
    await deliver(points, event("purchase.created", purchase(customer, "10.00", occurred_at=days_ago(500).isoformat())))
    # today: nothing earned in the last 365 days
    await deliver(points, event("purchase.created", purchase(customer, "10.00")))
    # arriving last but dated 450 days ago: the first two are within its 365 days
    late = purchase(customer, "10.00", occurred_at=days_ago(450).isoformat())
    await deliver(points, event("purchase.created", late))

    earned = {e["reference"]: e["points"] for e in await ledger(points, customer) if e["type"] == "earn"}
    assert earned[first["purchase_id"]] == 150
    assert earned[late["purchase_id"]] == 20  # silver at its own time
    assert sorted(earned.values()) == [10, 20, 20, 150]

    view = await balance(points, customer)
    assert view["qualifying_points"] == 10  # only today's purchase is within the last 365 days
    assert view["tier"] == "base"

    # a refund of the first purchase takes its points back from the window they counted in, not today's
    refund = {"purchase_id": first["purchase_id"], "refund_id": new_id("r"), "customer_id": customer,
              "total": first["total"], "currency": first["currency"]}  # fmt: skip
    await deliver(points, event("purchase.refunded", refund))
    assert (await balance(points, customer))["qualifying_points"] == 10


@pytest.mark.own_platform(services=["points"])
async def test_a_lot_expires_from_the_purchase_time(points: httpx.AsyncClient) -> None:
    customer = new_id()
    occurred_at = days_ago(200)
    await deliver(points, event("purchase.created", purchase(customer, "40.00", occurred_at=occurred_at.isoformat())))
    expiring = (await balance(points, customer))["expiring"]
    assert [(e["points"], datetime.fromisoformat(e["expires_at"])) for e in expiring] == [
        (40, occurred_at + timedelta(days=365))
    ]


@pytest.mark.own_platform(services=["points"])
async def test_points_past_their_expiry_when_earned_expire_at_once(points: httpx.AsyncClient) -> None:
    """Imported history: a purchase 400 days old earns points that expired 35 days ago. No balance shows them,
    one purchase at a time or a batch of them, and the ledger says what happened (earned, then expired)."""
    alone, batched = new_id(), new_id()
    await deliver(points, event("purchase.created", purchase(alone, "30.00", occurred_at=days_ago(400).isoformat())))
    old = [
        purchase(batched, total, occurred_at=days_ago(days).isoformat())
        for total, days in (("30.00", 400), ("5.00", 380))
    ]
    recent = purchase(batched, "12.00", occurred_at=days_ago(10).isoformat())
    batch = {"events": [event("purchase.created", p) for p in (*old, recent)]}
    for _ in range(2):  # a retried batch changes nothing
        response = await points.post("/internal/events:batch", json=batch)
        assert response.status_code == 200, response.text

    assert (await balance(points, alone))["balance"] == 0
    assert sorted((e["type"], e["points"]) for e in await ledger(points, alone)) == [("earn", 30), ("expire", -30)]
    view = await balance(points, batched)
    assert view["balance"] == 12
    assert [e["points"] for e in view["expiring"]] == [12]
    assert sorted((e["type"], e["points"]) for e in await ledger(points, batched)) == [
        ("earn", 5),
        ("earn", 12),
        ("earn", 30),
        ("expire", -30),
        ("expire", -5),
    ]
