"""A Hypothesis state machine: earns, purchases, redemptions, refunds and expiries on a few accounts,
sequentially (checked against an exact model of balances and lots) and in concurrent bursts (checked by the
arithmetic of the answers); after every step each balance, each lot and the audit must agree.

The machine runs in a worker thread (the service is served on the test's event loop, which stays free).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import Platform

ACCOUNTS = 3


@dataclass
class Lot:
    reference: str
    points: int
    remaining: int
    seq: int
    days: int | None = 365
    due: bool = False

    @property
    def order(self) -> tuple[int, int, int]:
        # expires_at = creation + days: within a test run, creation times differ by far less than a day
        return (0 if self.due else 1, self.days if self.days is not None else 10**9, self.seq)


@dataclass
class Purchase:
    earned: int
    total: int  # whole currency units
    refunded: int = 0
    reversed: int = 0
    lot: str | None = None
    fully_refunded: bool = False


@dataclass
class Account:
    customer_id: str
    balance: int = 0
    lots: list[Lot] = field(default_factory=list)
    purchases: dict[str, Purchase] = field(default_factory=dict)

    def open_lots(self) -> list[Lot]:
        return sorted((lot for lot in self.lots if lot.remaining > 0), key=lambda lot: lot.order)

    def take(self, n: int, first: str | None = None) -> None:
        """Take n points from the lots (first the given one, then the ones that expire first)."""
        if first is not None:
            for lot in self.lots:
                if lot.reference == first:
                    taken = min(lot.remaining, n)
                    lot.remaining -= taken
                    n -= taken
        for lot in self.open_lots():
            taken = min(lot.remaining, n)
            lot.remaining -= taken
            n -= taken

    def credit(self, reference: str, n: int, seq: int, days: int | None) -> str | None:
        before = self.balance
        self.balance += n
        if self.balance > 0:
            self.lots.append(Lot(reference, n, min(n, self.balance), seq, days))
            return reference
        assert before < 0
        return None

    def debit(self, n: int, first: str | None = None) -> None:
        self.take(min(n, max(self.balance, 0)), first)
        self.balance -= n


def expected_reversal(purchase: Purchase, amount: int | None) -> tuple[int, int, bool]:
    """(points, refunded afterwards, fully refunded) as docs/points.md says."""
    if amount is None or purchase.refunded + amount >= purchase.total:
        return purchase.earned - purchase.reversed, purchase.total, True
    refunded = purchase.refunded + amount
    target = math.floor(purchase.earned * refunded / purchase.total)
    return target - purchase.reversed, refunded, False


class LedgerMachine(RuleBasedStateMachine):
    service_url: str
    internal_token: str
    database_url: str

    def __init__(self) -> None:
        super().__init__()
        self.http = httpx.Client(
            base_url=self.service_url, headers={"X-Internal-Token": self.internal_token}, timeout=60
        )
        self.accounts = [Account(f"model-{uuid4().hex}") for _ in range(ACCOUNTS)]
        self.seq = 0
        self.days: int | None = 365

    def teardown(self) -> None:
        self.http.close()

    # --- helpers ---

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            connection = await asyncpg.connect(self.database_url, server_settings={"search_path": "points"})
            try:
                return await connection.fetch(query, *args)
            finally:
                await connection.close()

        return asyncio.run(run())

    def post_event(self, type_: str, payload: dict[str, Any]) -> None:
        # as the relay sends it: the business time is the purchase's own, when the payload names one
        now = datetime.now(UTC).isoformat()
        body = {"id": str(uuid4()), "type": type_, "occurred_at": payload.get("occurred_at", now), "published_at": now,
                "payload": payload}  # fmt: skip
        response = self.http.post("/internal/events", json=body)
        assert response.status_code == 200, response.text

    def purchase_payload(self, account: Account, pid: str, units: int) -> dict[str, Any]:
        return {"purchase_id": pid, "customer_id": account.customer_id, "occurred_at": datetime.now(UTC).isoformat(),
                "currency": "EUR", "total": f"{units}.00",
                "items": [{"product_id": "p", "name": "n", "category": "misc", "unit_price": f"{units}.00",
                           "quantity": 1}]}  # fmt: skip

    def refundable(self) -> list[tuple[int, str]]:
        return [
            (i, pid)
            for i, account in enumerate(self.accounts)
            for pid, purchase in account.purchases.items()
            if not purchase.fully_refunded
        ]

    # --- sequential rules, checked exactly ---

    @rule(i=st.integers(0, ACCOUNTS - 1), n=st.integers(1, 200))
    def earn(self, i: int, n: int) -> None:
        account, reference = self.accounts[i], f"e-{uuid4().hex[:12]}"
        response = self.http.post(
            f"/v1/customers/{account.customer_id}/points/earn", json={"points": n, "reference": reference}
        )
        assert response.status_code == 201, response.text
        account.credit(reference, n, self.next_seq(), self.days)
        assert response.json()["balance"] == account.balance

    @rule(i=st.integers(0, ACCOUNTS - 1), units=st.integers(1, 200))
    def purchase(self, i: int, units: int) -> None:
        account, pid = self.accounts[i], f"p-{uuid4().hex[:12]}"
        self.post_event("purchase.created", self.purchase_payload(account, pid, units))
        lot = account.credit(pid, units, self.next_seq(), self.days)
        account.purchases[pid] = Purchase(earned=units, total=units, lot=lot)

    @rule(i=st.integers(0, ACCOUNTS - 1), n=st.integers(1, 300))
    def redeem(self, i: int, n: int) -> None:
        account = self.accounts[i]
        response = self.http.post(
            f"/v1/customers/{account.customer_id}/points/redemptions",
            json={"points": n, "reference": f"r-{uuid4().hex[:12]}"},
        )
        if account.balance >= n:
            assert response.status_code == 201, response.text
            account.take(n)
            account.balance -= n
            assert response.json()["balance"] == account.balance
        else:
            assert response.status_code == 409, response.text

    # Choices among the model's lots and purchases are drawn as an index, not from the list: after a burst the
    # lots depend on the order the requests ran in, and Hypothesis needs draws that do not depend on it.
    @rule(pick=st.integers(0, 10**6), amount=st.one_of(st.none(), st.integers(1, 150)))
    def refund(self, pick: int, amount: int | None) -> None:
        candidates = self.refundable()
        if not candidates:
            return
        i, pid = candidates[pick % len(candidates)]
        account = self.accounts[i]
        purchase = account.purchases[pid]
        points, refunded, full = expected_reversal(purchase, amount)
        payload = {"purchase_id": pid, "refund_id": f"rf-{uuid4().hex[:12]}", "customer_id": account.customer_id,
                   "amount": None if amount is None else f"{amount}.00", "total": f"{purchase.total}.00",
                   "currency": "EUR"}  # fmt: skip
        self.post_event("purchase.refunded", payload)
        purchase.refunded, purchase.fully_refunded = refunded, full
        if points > 0:
            account.debit(points, purchase.lot)
            purchase.reversed += points

    @rule(days=st.sampled_from([7, 30, 365, None]))
    def change_expiry(self, days: int | None) -> None:
        rules = {"points_per_currency_unit": 1, "category_multipliers": {}, "bonus_campaigns": [],
                 "expires_after_days": days}  # fmt: skip
        assert self.http.put("/v1/points/rules", json=rules).status_code == 200
        self.days = days

    @rule(pick=st.integers(0, 10**6))
    def expire(self, pick: int) -> None:
        candidates = [(a, lot) for a in self.accounts for lot in a.open_lots()]
        if not candidates:
            return
        account, lot = candidates[pick % len(candidates)]
        self.sql(
            "UPDATE lots SET expires_at = now() - interval '1 day' WHERE customer_id = $1 AND transaction_id = "
            "(SELECT id FROM transactions WHERE customer_id = $1 AND type = 'earn' AND reference = $2)",
            account.customer_id,
            lot.reference,
        )
        lot.due = True
        response = self.http.post("/v1/points/expiry-runs")
        assert response.status_code == 201, response.text
        assert response.json()["points_expired"] >= lot.remaining
        account.balance -= lot.remaining
        lot.remaining = 0

    # --- concurrent bursts, checked by the answers' arithmetic ---

    @rule(
        ops=st.lists(
            st.tuples(st.sampled_from(["earn", "redeem", "redeem", "refund", "expiry"]), st.integers(0, ACCOUNTS - 1),
                      st.integers(1, 120)),
            min_size=4,
            max_size=24,
        )
    )  # fmt: skip
    def burst(self, ops: list[tuple[str, int, int]]) -> None:
        refundable = {pid: i for i, pid in self.refundable()}
        planned: list[tuple[str, int, dict[str, Any], str]] = []
        for kind, i, n in ops:
            if kind == "earn":
                planned.append((kind, i, {"points": n, "reference": f"e-{uuid4().hex[:12]}"}, "earn"))
            elif kind == "redeem":
                planned.append((kind, i, {"points": n, "reference": f"r-{uuid4().hex[:12]}"}, "redemptions"))
            elif kind == "refund" and refundable:
                pid = next(iter(refundable))  # each purchase at most once a burst: its share is then order-free
                i = refundable.pop(pid)
                amount = None if n % 3 == 0 else n
                planned.append((kind, i, {"purchase_reference": pid, "refund_reference": f"rf-{uuid4().hex[:12]}",
                                          **({"amount": f"{amount}.00"} if amount else {})}, "reversals"))  # fmt: skip
            elif kind == "expiry":
                planned.append((kind, i, {}, ""))

        async def send() -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=self.service_url,
                headers={"X-Internal-Token": self.internal_token},
                limits=httpx.Limits(max_connections=50),
                timeout=60,
            ) as client:
                calls = [
                    client.post("/v1/points/expiry-runs")
                    if kind == "expiry"
                    else client.post(f"/v1/customers/{self.accounts[i].customer_id}/points/{path}", json=body)
                    for kind, i, body, path in planned
                ]
                return list(await asyncio.gather(*calls))

        before = [a.balance for a in self.accounts]
        responses = asyncio.run(send())
        change = [0] * ACCOUNTS
        for (kind, i, body, _), response in zip(planned, responses, strict=True):
            account = self.accounts[i]
            if kind == "earn":
                assert response.status_code == 201, response.text
                change[i] += body["points"]
                account.lots.append(Lot(body["reference"], body["points"], 0, 0, self.days))
            elif kind == "redeem":
                assert response.status_code in (201, 409), response.text
                if response.status_code == 201:
                    change[i] -= body["points"]
                    assert response.json()["balance"] >= 0
            elif kind == "refund":
                assert response.status_code == 201, response.text
                purchase = account.purchases[body["purchase_reference"]]
                amount = int(body["amount"].split(".")[0]) if "amount" in body else None
                points, refunded, full = expected_reversal(purchase, amount)
                assert response.json()["points"] == points
                purchase.refunded, purchase.fully_refunded = refunded, full
                purchase.reversed += points
                change[i] -= points
            else:
                assert response.status_code == 201, response.text
        for i, account in enumerate(self.accounts):
            account.balance = before[i] + change[i]
        self.resync_lots()

    def resync_lots(self) -> None:
        """After a burst, which lots paid for what, and in which order the burst's lots were created, depend on
        the order the requests ran in: read both back."""
        for account in self.accounts:
            rows = self.sql(
                "SELECT t.reference, l.remaining, l.id FROM lots l JOIN transactions t ON t.id = l.transaction_id "
                "WHERE l.customer_id = $1",
                account.customer_id,
            )
            found = {row["reference"]: (row["remaining"], row["id"]) for row in rows}
            for lot in account.lots:
                lot.remaining = found.get(lot.reference, (0, 0))[0]
            created = [lot for lot in account.lots if lot.seq == 0]
            for lot in sorted(created, key=lambda lot: found.get(lot.reference, (0, 0))[1]):
                lot.seq = self.next_seq()

    # --- invariants ---

    @invariant()
    def balances_lots_and_audit_agree(self) -> None:
        for account in self.accounts:
            view = self.http.get(f"/v1/customers/{account.customer_id}/points").json()
            assert view["balance"] == account.balance, (account.customer_id, view, account.balance)
            rows = self.sql(
                "SELECT t.reference, l.remaining FROM lots l JOIN transactions t ON t.id = l.transaction_id "
                "WHERE l.customer_id = $1 AND l.remaining > 0",
                account.customer_id,
            )
            actual = {row["reference"]: row["remaining"] for row in rows}
            assert actual == {lot.reference: lot.remaining for lot in account.lots if lot.remaining > 0}
            assert sum(actual.values()) == max(account.balance, 0)
            redeems = self.sql(
                "SELECT min(balance_after) AS low FROM transactions WHERE customer_id = $1 AND type = 'redeem'",
                account.customer_id,
            )
            assert redeems[0]["low"] is None or redeems[0]["low"] >= 0
        report = self.http.get("/v1/points/audit").json()
        assert report["mismatches"] == [], report

    @initialize()
    def start(self) -> None:
        self.change_expiry(365)


@pytest.fixture
async def flat_tiers(points: httpx.AsyncClient) -> None:
    """One tier with multiplier 1, so a purchase of N whole units earns exactly N points."""
    response = await points.put("/v1/points/tiers", json=[{"name": "flat", "threshold": 0, "earn_multiplier": 1}])
    assert response.status_code == 200


@pytest.mark.own_platform(services=["points"])  # it changes the tiers and the expiry rules
@pytest.mark.usefixtures("flat_tiers")
async def test_ledger_against_a_model(platform: Platform, database_url: str) -> None:
    machine = type(
        "BoundLedgerMachine",
        (LedgerMachine,),
        {
            "service_url": platform.urls["points"],
            "internal_token": platform.env["LOYALTY_INTERNAL_TOKEN"],
            "database_url": database_url,
        },
    )
    config = settings(
        max_examples=12,
        stateful_step_count=18,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    await asyncio.to_thread(run_state_machine_as_test, machine, settings=config)
