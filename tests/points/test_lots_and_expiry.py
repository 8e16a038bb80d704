"""Lots: redemptions use the lots that expire first; expiry runs write `expire` transactions for what is left.

To let time pass, a test moves a lot's `expires_at` into the past with SQL (the service has no clock
override: an `as_of` on the public expiry run would let anyone holding the admin key expire points early).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from points import service
from tests.conftest import Platform, RolledBack
from tests.points.conftest import DEFAULT_RULES, audit_clean, balance, earn, ledger, new_id


async def lots_of(db: asyncpg.Connection, customer: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT l.id, l.points, l.remaining, l.expires_at, t.reference FROM lots l "
        "JOIN transactions t ON t.id = l.transaction_id WHERE l.customer_id = $1 ORDER BY l.id",
        customer,
    )
    return [dict(r) for r in rows]


async def age_lot(db: asyncpg.Connection, customer: str, reference: str, *, days_ago: int = 1) -> None:
    """Time travel for one lot: it expired `days_ago` days ago."""
    await db.execute(
        "UPDATE lots SET expires_at = now() - make_interval(days => $3) "
        "WHERE customer_id = $1 AND transaction_id = "
        "(SELECT id FROM transactions WHERE customer_id = $1 AND type = 'earn' AND reference = $2)",
        customer,
        reference,
        days_ago,
    )


@pytest.mark.own_platform(services=["points"])
class TestFifoByExpiry:
    async def test_redemption_uses_the_lot_that_expires_first_not_the_oldest(
        self, points: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        customer = new_id()
        await earn(points, customer, 100, reference="long")  # expires in 365 days
        await points.put("/v1/points/rules", json={**DEFAULT_RULES, "expires_after_days": 30})
        await earn(points, customer, 50, reference="short")  # newer, but expires in 30 days
        response = await points.post(
            f"/v1/customers/{customer}/points/redemptions", json={"points": 70, "reference": "r"}
        )
        assert response.status_code == 201
        remaining = {lot["reference"]: lot["remaining"] for lot in await lots_of(db, customer)}
        assert remaining == {"short": 0, "long": 80}
        view = await balance(points, customer)
        assert view["balance"] == 80
        assert [e["points"] for e in view["expiring"]] == [80]

    async def test_expiring_lists_open_lots_soonest_first(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        await earn(points, customer, 10, reference="a")
        await points.put("/v1/points/rules", json={**DEFAULT_RULES, "expires_after_days": 7})
        await earn(points, customer, 20, reference="b")
        view = await balance(points, customer)
        assert [e["points"] for e in view["expiring"]] == [20, 10]
        assert view["expiring"][0]["expires_at"] < view["expiring"][1]["expires_at"]

    async def test_points_without_expiry_are_used_last(self, points: httpx.AsyncClient, db: asyncpg.Connection) -> None:
        customer = new_id()
        await points.put("/v1/points/rules", json={**DEFAULT_RULES, "expires_after_days": None})
        await earn(points, customer, 10, reference="forever")
        await points.put("/v1/points/rules", json={**DEFAULT_RULES, "expires_after_days": 400})
        await earn(points, customer, 10, reference="dated")
        await points.post(f"/v1/customers/{customer}/points/redemptions", json={"points": 15, "reference": "r"})
        remaining = {lot["reference"]: lot["remaining"] for lot in await lots_of(db, customer)}
        assert remaining == {"forever": 5, "dated": 0}
        assert (await balance(points, customer))["expiring"] == []


class TestExpiryRuns:
    @pytest.mark.own_platform(services=["points"])  # a run expires every due lot of the platform: only this one's
    async def test_expiry_writes_expire_transactions_for_what_is_left(
        self, points: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        customer = new_id()
        await earn(points, customer, 100, reference="old")
        await earn(points, customer, 40, reference="new")
        await points.post(f"/v1/customers/{customer}/points/redemptions", json={"points": 30, "reference": "r"})
        await age_lot(db, customer, "old")
        run = await points.post("/v1/points/expiry-runs")
        assert run.status_code == 201
        assert (run.json()["points_expired"], run.json()["lots_expired"]) == (70, 1)
        assert (await balance(points, customer))["balance"] == 40
        entries = await ledger(points, customer)
        assert [(e["type"], e["points"], e["balance_after"]) for e in entries] == [
            ("earn", 100, 100),
            ("earn", 40, 140),
            ("redeem", -30, 110),
            ("expire", -70, 40),
        ]
        again = (await points.post("/v1/points/expiry-runs")).json()
        assert again["lots_expired"] == 0
        assert (await balance(points, customer))["balance"] == 40
        await audit_clean(points)

    async def test_a_lot_past_its_date_leaves_every_balance_before_the_run(
        self, points: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        customer = new_id()
        await earn(points, customer, 100, reference="old")
        await earn(points, customer, 40, reference="new")
        await age_lot(db, customer, "old")
        view = await balance(points, customer)
        assert view["balance"] == 40
        assert [e["points"] for e in view["expiring"]] == [40]
        reward = await points.post("/v1/rewards", json={"name": "mug", "kind": "item", "cost_points": 100})
        assert reward.status_code == 201, reward.text
        offered = await points.get(f"/v1/customers/{customer}/rewards", params={"limit": 100})
        mug = next(r for r in offered.json()["items"] if r["id"] == reward.json()["id"])
        assert (mug["affordable"], mug["points_needed"]) == (False, 60)
        # the run writes what the balance already left out
        await points.post("/v1/points/expiry-runs")
        assert [e["type"] for e in await ledger(points, customer)] == ["earn", "earn", "expire"]
        assert (await balance(points, customer))["balance"] == 40
        await audit_clean(points)

    async def test_a_fully_spent_lot_expires_nothing(self, points: httpx.AsyncClient, db: asyncpg.Connection) -> None:
        customer = new_id()
        await earn(points, customer, 10, reference="old")
        await points.post(f"/v1/customers/{customer}/points/redemptions", json={"points": 10, "reference": "r"})
        await age_lot(db, customer, "old")
        await points.post("/v1/points/expiry-runs")
        assert [e["type"] for e in await ledger(points, customer)] == ["earn", "redeem"]

    async def test_expiry_run_is_admin_only_through_the_gateway(self, admin: httpx.AsyncClient) -> None:
        key = await admin.post("/v1/api-keys", json={"name": new_id("k"), "scopes": ["points:write", "points:read"]})
        assert key.status_code == 201, key.text
        async with httpx.AsyncClient(
            base_url=str(admin.base_url), headers={"Authorization": f"Bearer {key.json()['key']}"}
        ) as partner:
            assert (await partner.post("/v1/points/expiry-runs")).status_code == 403
        assert (await admin.post("/v1/points/expiry-runs")).status_code == 201


class TestLiability:
    async def test_liability_counts_open_lots_by_expiry_month(self, points: httpx.AsyncClient) -> None:
        before = (await points.get("/v1/points/liability")).json()
        customer = new_id()
        await earn(points, customer, 123)
        after = (await points.get("/v1/points/liability")).json()
        assert after["total_points"] == before["total_points"] + 123
        assert sum(m["points"] for m in after["by_expiry_month"]) == after["total_points"]


class TestAppendOnly:
    async def test_the_ledger_refuses_updates_and_deletes(
        self, points: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        customer = new_id()
        await earn(points, customer, 5)
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await db.execute("UPDATE transactions SET points = 500 WHERE customer_id = $1", customer)
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await db.execute("DELETE FROM transactions WHERE customer_id = $1", customer)
        assert (await balance(points, customer))["balance"] == 5


@pytest.mark.own_platform(services=["points"])
class TestScheduledExpiry:
    async def test_the_periodic_job_expires_due_lots(
        self, platform: Platform, points: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        """The job the service schedules (POINTS_EXPIRY_INTERVAL_SECONDS), run once on the service's own database."""
        customer = new_id()
        await earn(points, customer, 25, reference="old")
        await age_lot(db, customer, "old")
        database = platform.servers["points"].server.config.app.state.database
        run = await service.expire_due(database)
        assert run.points_expired == 25  # its platform's only due lot
        assert [(e["type"], e["points"]) for e in await ledger(points, customer)] == [("earn", 25), ("expire", -25)]


class TestExpiredLotsAreNeverSpent:
    """Whether or not the expiry job has run, a redemption cannot spend a lot past its `expires_at`."""

    @pytest.mark.parametrize("idempotency_key", [False, True], ids=["plain", "idempotency-key"])
    async def test_a_redemption_expires_due_lots_first(
        self, points: httpx.AsyncClient, db: asyncpg.Connection, idempotency_key: bool
    ) -> None:
        customer = new_id()
        await earn(points, customer, 100, reference="old")
        await earn(points, customer, 30, reference="fresh")
        await age_lot(db, customer, "old")
        headers = {"Idempotency-Key": new_id("k")} if idempotency_key else {}
        url = f"/v1/customers/{customer}/points/redemptions"
        too_much = await points.post(url, json={"points": 31, "reference": "too-much"}, headers=headers)
        assert too_much.status_code == 409, too_much.text
        assert too_much.json()["code"] == "insufficient_points"
        assert too_much.json()["balance"] == 30
        headers = {"Idempotency-Key": new_id("k")} if idempotency_key else {}
        spent = await points.post(url, json={"points": 30, "reference": "all"}, headers=headers)
        assert spent.status_code == 201, spent.text
        assert spent.json()["balance"] == 0
        entries = [(e["type"], e["points"], e["balance_after"]) for e in await ledger(points, customer)]
        assert entries == [("earn", 100, 100), ("earn", 30, 130), ("expire", -100, 30), ("redeem", -30, 0)]
        remaining = {lot["reference"]: lot["remaining"] for lot in await lots_of(db, customer)}
        assert remaining == {"old": 0, "fresh": 0}
        # the job finds nothing left to do for this account
        assert (await points.post("/v1/points/expiry-runs")).status_code == 201
        assert [e["type"] for e in await ledger(points, customer)] == ["earn", "earn", "expire", "redeem"]
        await audit_clean(points)

    async def test_a_reward_redemption_cannot_spend_expired_points_either(
        self, points: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        from tests.points.test_rewards import create_reward, redeem

        customer = new_id()
        await earn(points, customer, 100, reference="old")
        await earn(points, customer, 60, reference="fresh")
        await age_lot(db, customer, "old")
        reward = await create_reward(points, cost_points=100)
        refused = await redeem(points, customer, reward["id"], "too-much")
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "insufficient_points"
        cheap = await create_reward(points, cost_points=60)
        taken = await redeem(points, customer, cheap["id"], "all")
        assert taken.status_code == 201, taken.text
        assert (await balance(points, customer))["balance"] == 0
        assert [(e["type"], e["points"]) for e in await ledger(points, customer)] == [
            ("earn", 100),
            ("earn", 60),
            ("expire", -100),
            ("redeem", -60),
        ]
        await audit_clean(points)

    async def test_a_debit_cannot_be_paid_with_expired_points(
        self, points: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        """A negative adjustment (or a refund's reversal: the same ledger function) when a lot is past its date:
        taking it would leave the customer the points of the lot still good once the job runs."""
        customer = new_id()
        await earn(points, customer, 100, reference="old")
        await earn(points, customer, 40, reference="fresh")
        await age_lot(db, customer, "old")
        response = await points.post(
            f"/v1/customers/{customer}/points/adjustments", json={"points": -40, "reference": "writeoff"}
        )
        assert response.status_code == 201, response.text
        entries = [(e["type"], e["points"], e["balance_after"]) for e in await ledger(points, customer)]
        assert entries == [("earn", 100, 100), ("earn", 40, 140), ("expire", -100, 40), ("adjust", -40, 0)]
        remaining = {lot["reference"]: lot["remaining"] for lot in await lots_of(db, customer)}
        assert remaining == {"old": 0, "fresh": 0}
        assert (await points.post("/v1/points/expiry-runs")).status_code == 201
        assert (await balance(points, customer))["balance"] == 0
        await audit_clean(points)

    async def test_a_replayed_redemption_is_answered_as_before(
        self, points: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        customer = new_id()
        await earn(points, customer, 50, reference="old")
        url = f"/v1/customers/{customer}/points/redemptions"
        first = await points.post(url, json={"points": 20, "reference": "r"})
        assert first.status_code == 201
        await age_lot(db, customer, "old")
        again = await points.post(url, json={"points": 20, "reference": "r"})
        assert again.status_code == 201
        assert again.json() == first.json()
        # leave nothing due behind: other tests count what a run expires
        assert (await points.post("/v1/points/expiry-runs")).status_code == 201


MAX_BALANCE = 2**53 - 1


class TestBalanceBounds:
    async def test_an_earn_past_the_bound_is_409_and_changes_nothing(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        await earn(points, customer, MAX_BALANCE, reference="big")
        before = await ledger(points, customer)
        over = await points.post(f"/v1/customers/{customer}/points/earn", json={"points": 1, "reference": "one"})
        assert over.status_code == 409, over.text
        assert over.headers["content-type"].startswith("application/problem+json")
        assert over.json()["code"] == "balance_out_of_range"
        adjusted = await points.post(
            f"/v1/customers/{customer}/points/adjustments", json={"points": 5, "reference": "adj"}
        )
        assert adjusted.status_code == 409 and adjusted.json()["code"] == "balance_out_of_range"
        assert (await balance(points, customer))["balance"] == MAX_BALANCE
        assert await ledger(points, customer) == before
        # the reference was not used up: once there is room, it earns
        spent = await points.post(
            f"/v1/customers/{customer}/points/redemptions", json={"points": 10, "reference": "spend"}
        )
        assert spent.status_code == 201
        assert (
            await points.post(f"/v1/customers/{customer}/points/earn", json={"points": 1, "reference": "one"})
        ).status_code == 201
        # and a replay of the first earn is still a replay, not a refusal
        replay = await points.post(
            f"/v1/customers/{customer}/points/earn", json={"points": MAX_BALANCE, "reference": "big"}
        )
        assert replay.status_code == 201 and replay.json()["balance"] == MAX_BALANCE
        await audit_clean(points)

    async def test_a_debit_past_the_lower_bound_is_409(self, points: httpx.AsyncClient) -> None:
        customer = new_id()
        url = f"/v1/customers/{customer}/points/adjustments"
        assert (await points.post(url, json={"points": -MAX_BALANCE, "reference": "a"})).status_code == 201
        under = await points.post(url, json={"points": -1, "reference": "b"})
        assert under.status_code == 409 and under.json()["code"] == "balance_out_of_range"
        assert (await balance(points, customer))["balance"] == -MAX_BALANCE
        assert len(await ledger(points, customer)) == 1

    async def test_the_database_refuses_an_out_of_range_balance_on_its_own(self, rolled_back: RolledBack) -> None:
        session = await rolled_back("points")
        insert = text("INSERT INTO accounts (customer_id, balance) VALUES (:customer, :balance)")
        for bound in (MAX_BALANCE, -MAX_BALANCE):  # the bounds themselves are balances (rolled back after the test)
            await session.execute(insert, {"customer": new_id(), "balance": bound})
        for beyond in (MAX_BALANCE + 1, -MAX_BALANCE - 1):
            with pytest.raises(IntegrityError, match="CheckViolation"):
                async with session.begin_nested():
                    await session.execute(insert, {"customer": new_id(), "balance": beyond})
