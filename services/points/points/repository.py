"""All SQL of the points service.

Value-moving statements call the PL/pgSQL functions of migration points_0002: one round trip each, with
the account row locked before anything is read (see that migration's docstring). The redemption, the hot
path, goes straight to the session's asyncpg connection: SQLAlchemy's statement compilation and result
processing cost about as much CPU as the rest of the request (measured in scripts/bench_points.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from kit.db import array_columns, request_driver_connection, sole_statement_connection
from kit.json import dumps, loads
from points.schemas import AuditMismatch, LiabilityMonth
from points.tables import MAX_BALANCE

Typed = TypeVar("Typed")


async def _first(session: AsyncSession, kind: type[Typed], statement: str, params: dict[str, Any]) -> Typed | None:
    """The statement's first row as `kind` (its columns by name), or None."""
    row = (await session.execute(text(statement), params)).first()
    return None if row is None else kind(**row._mapping)


@dataclass(frozen=True)
class Movement:
    """What a value-moving function answered."""

    outcome: str  # created | replayed | insufficient | out_of_range (nothing changed)
    transaction_id: int | None
    points: int
    balance: int
    lot_id: int | None = None


_REDEEM = "SELECT r_outcome, r_transaction_id, r_points, r_balance FROM points_redeem($1, $2, $3, $4)"


async def redeem(session: AsyncSession, customer_id: str, points: int, reference: str, description: str) -> Movement:
    """The whole redemption is one call of `points_redeem` (expired lots taken out, the balance checked and
    debited, the transaction written): the request's only statement."""
    async with sole_statement_connection(session) as connection:
        row = await connection.fetchrow(_REDEEM, customer_id, points, reference, description)
    return Movement(row[0], row[1], row[2], row[3])


async def credit(
    session: AsyncSession,
    customer_id: str,
    type_: str,
    points: int,
    reference: str,
    description: str,
    expires_at: datetime | None,
) -> Movement:
    return await _move(session, "points_credit", customer_id, type_, points, reference, description, expires_at)


async def _move(
    session: AsyncSession,
    function: str,
    customer_id: str,
    type_: str,
    points: int,
    reference: str,
    description: str,
    last: datetime | int | None,
) -> Movement:
    """One value-moving function (`points_credit` or `points_debit`, whose last argument is the lot's expiry or
    the first lot to take from)."""
    row = (
        await session.execute(
            text(f"SELECT * FROM {function}(:customer, :type, :points, :reference, :description, :last)"),
            {
                "customer": customer_id,
                "type": type_,
                "points": points,
                "reference": reference,
                "description": description,
                "last": last,
            },
        )
    ).one()
    return Movement(row.r_outcome, row.r_transaction_id, row.r_points, row.r_balance, row._mapping.get("r_lot_id"))


_CREDIT_MANY = text(
    """
    SELECT l.ord, c.r_outcome, c.r_transaction_id, c.r_points, c.r_balance, c.r_lot_id
      FROM (SELECT *
              FROM unnest(CAST(:customers AS varchar[]), CAST(:points AS bigint[]), CAST(:references AS varchar[]),
                          CAST(:descriptions AS varchar[]), CAST(:expires AS timestamptz[]))
                   WITH ORDINALITY AS u(customer, points, reference, description, expires_at, ord)
             ORDER BY customer, ord) AS l
     CROSS JOIN LATERAL points_credit(l.customer, :type, l.points, l.reference, l.description, l.expires_at) AS c
    """
)


@dataclass(frozen=True)
class Credit:
    customer_id: str
    points: int
    reference: str
    description: str
    expires_at: datetime | None


async def credit_many(session: AsyncSession, type_: str, credits: Sequence[Credit]) -> list[Movement]:
    """`credit` for many lines in one round trip, answered in the lines' order. Accounts are locked in
    customer order (two imports touching the same members cannot deadlock), each account's lines in theirs."""
    rows = await session.execute(
        _CREDIT_MANY,
        {
            "type": type_,
            "customers": [c.customer_id for c in credits],
            "points": [c.points for c in credits],
            "references": [c.reference for c in credits],
            "descriptions": [c.description for c in credits],
            "expires": [c.expires_at for c in credits],
        },
    )
    movements = sorted(rows, key=lambda row: row.ord)
    return [Movement(r.r_outcome, r.r_transaction_id, r.r_points, r.r_balance, r.r_lot_id) for r in movements]


# Opening balances, set-based (scripts/bench_switching.py): the per-line function costs ~6 statements a line,
# these two statements cost a few index probes and inserts a line. First every account of the file is created
# if need be and locked, in customer order (the order `credit_many` and `lock_account` take them in);
# then, in a new snapshot (a concurrent import of the same lines, committed while we waited, is seen), each
# line is judged: a (customer, reference) already in the ledger, or earlier in the file, is `replayed`; the
# others become `adjust`-type transactions with their running balance, their lots (the part that does not
# repay a negative balance), their qualifying points and the accounts' new balances, all in one statement.
# A customer whose balance would leave the range is `deferred`: its lines go through `credit_many`, line by
# line, which refuses just the line that overflows.
_LOCK_ACCOUNTS = """
    INSERT INTO accounts (customer_id)
    SELECT DISTINCT c FROM unnest(string_to_array($1, ',')) AS c ORDER BY 1
    ON CONFLICT (customer_id) DO UPDATE SET customer_id = excluded.customer_id
"""

_CREDIT_LINES = f"""
    WITH line AS (
        SELECT u.*,
               row_number() OVER (PARTITION BY u.customer, u.reference ORDER BY u.ord) > 1
               OR EXISTS (SELECT 1 FROM transactions t
                           WHERE t.customer_id = u.customer AND t.type = $1 AND t.reference = u.reference) AS replayed
          FROM (SELECT u.customer, u.points, u.reference, coalesce(u.description, $8) AS description,
                       CASE WHEN u.ord <= cardinality($6::timestamptz[]) THEN u.expires_at ELSE $9 END AS expires_at,
                       u.qualifying, u.ord
                  FROM unnest(string_to_array($2, ','), string_to_array($3, ',')::bigint[], string_to_array($4, ','),
                              $5::varchar[], $6::timestamptz[], $7::bigint[])
                       WITH ORDINALITY AS u(customer, points, reference, description, expires_at, qualifying, ord)) u
    ), fresh AS (
        SELECT l.*, a.balance + sum(l.points) OVER (PARTITION BY l.customer ORDER BY l.ord) AS balance_after
          FROM line l JOIN accounts a ON a.customer_id = l.customer
         WHERE NOT l.replayed
    ), deferred AS (
        SELECT DISTINCT customer FROM fresh WHERE balance_after > {MAX_BALANCE}
    ), taken AS (
        SELECT f.* FROM fresh f WHERE NOT EXISTS (SELECT 1 FROM deferred d WHERE d.customer = f.customer)
    ), inserted AS (
        INSERT INTO transactions (customer_id, type, points, balance_after, reference, description)
        SELECT customer, $1, points, balance_after, reference, description FROM taken ORDER BY ord
        RETURNING id, customer_id, reference, points, balance_after
    ), joined AS (
        SELECT i.*, t.expires_at, t.qualifying
          FROM inserted i JOIN taken t ON t.customer = i.customer_id AND t.reference = i.reference
    ), lot AS (
        INSERT INTO lots (customer_id, transaction_id, points, remaining, expires_at)
        SELECT customer_id, id, points, LEAST(points, balance_after), expires_at FROM joined WHERE balance_after > 0
    ), qualification AS (
        INSERT INTO transaction_qualification (transaction_id, qualifies_at, qualifying_points)
        SELECT id, now(), qualifying FROM joined WHERE qualifying IS NOT NULL
    ), account AS (
        UPDATE accounts a SET balance = a.balance + s.points, updated_at = now()
          FROM (SELECT customer, sum(points) AS points FROM taken GROUP BY customer) s
         WHERE a.customer_id = s.customer
    )
    SELECT l.ord, CASE WHEN d.customer IS NOT NULL THEN 'deferred' ELSE 'replayed' END
      FROM line l LEFT JOIN deferred d ON d.customer = l.customer
     WHERE l.replayed OR d.customer IS NOT NULL
"""


@dataclass(frozen=True)
class OpeningCredit:
    customer_id: str
    points: int
    reference: str
    description: str
    expires_at: datetime | None
    qualifying_points: int | None


async def credit_lines(session: AsyncSession, type_: str, lines: Sequence[OpeningCredit]) -> dict[int, str]:
    """Credit every line at once (see `_CREDIT_LINES`); answers the lines (0-based) not `created`: `replayed`,
    or `deferred` (for `credit_many`). Runs in the request's transaction."""
    connection = await request_driver_connection(session)
    customers = ",".join([line.customer_id for line in lines])
    await connection.execute(_LOCK_ACCOUNTS, customers)
    # Customer ids and references hold no comma (their pattern), so each goes as one text the database splits:
    # asyncpg checks every element of an array parameter against collections.abc, a Python-level isinstance
    # that cost more than the rest of the encoding. A column whose lines all hold one value (the description,
    # the expiry, no qualifying points: the usual file) goes as that value and an empty array.
    description, expires_at = lines[0].description, lines[0].expires_at
    same_description = all(line.description == description for line in lines)
    same_expiry = all(line.expires_at == expires_at for line in lines)
    rows = await connection.fetch(
        _CREDIT_LINES,
        type_,
        customers,
        ",".join([str(line.points) for line in lines]),
        ",".join([line.reference for line in lines]),
        [] if same_description else [line.description for line in lines],
        [] if same_expiry else [line.expires_at for line in lines],
        [line.qualifying_points for line in lines] if any(line.qualifying_points for line in lines) else [],
        description,
        expires_at,
    )
    return {row[0] - 1: row[1] for row in rows}


# now, the rules and tiers, and each time's window start as the ledger computes it (`interval '365 days'` in the
# session's time zone: a calendar year of days, not always 365 x 24 hours)
_RUN_CONTEXT = """
    SELECT now(), (SELECT value FROM settings WHERE key = 'rules'), (SELECT value FROM settings WHERE key = 'tiers'),
           now() - interval '365 days',
           ARRAY(SELECT t - interval '365 days' FROM unnest($1::timestamptz[]) WITH ORDINALITY AS u (t, n) ORDER BY n)
"""


@dataclass(frozen=True)
class RunContext:
    """What a run of purchases is earned by: the rules and tiers (JSON values, None when never set), now, and the
    start of the 365-day window before now and before each purchase's time (in the run's order)."""

    now: datetime
    rules: Any
    tiers: Any
    now_since: datetime
    window_starts: list[datetime]


async def run_context(session: AsyncSession, times: Sequence[datetime]) -> RunContext:
    connection = await request_driver_connection(session)
    row = await connection.fetchrow(_RUN_CONTEXT, times)
    assert row is not None
    rules, tiers = (loads(v) if isinstance(v, str) else v for v in (row[1], row[2]))
    return RunContext(row[0], rules, tiers, row[3], list(row[4]))


_QUALIFYING_ROWS = """
    SELECT t.customer_id, coalesce(q.qualifies_at, t.created_at) AS at,
           coalesce(q.qualifying_points, CASE WHEN t.type IN ('earn', 'reverse') THEN t.points ELSE 0 END) AS points
      FROM transactions t LEFT JOIN transaction_qualification q ON q.transaction_id = t.id
     WHERE t.customer_id = ANY($1::varchar[]) AND coalesce(q.qualifies_at, t.created_at) > $2
"""


@dataclass(frozen=True)
class QualifyingEntry:
    customer_id: str
    at: datetime
    points: int


async def qualifying_entries(session: AsyncSession, customers: Sequence[str], since: datetime) -> list[QualifyingEntry]:
    """The customers' ledger entries counting toward tiers after `since`, each at its business time."""
    connection = await request_driver_connection(session)
    rows = await connection.fetch(_QUALIFYING_ROWS, customers, since)
    return [QualifyingEntry(customer, at, int(points)) for customer, at, points in rows]


_RECORD_PURCHASES = """
    INSERT INTO purchase_earnings (customer_id, purchase_id, points, lot_id, total, currency, occurred_at)
    SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::bigint[], $4::bigint[], $5::numeric[], $6::varchar[],
                         $7::timestamptz[])
    ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True)
class PurchaseEarning:
    customer_id: str
    purchase_id: str
    points: int
    lot_id: int | None
    total: Decimal
    currency: str
    occurred_at: datetime


@dataclass(frozen=True)
class EarnedPurchase:
    points: int
    lot_id: int | None
    total: Decimal
    currency: str
    refunded_amount: Decimal
    reversed_points: int
    occurred_at: datetime | None


async def record_purchase_earnings(session: AsyncSession, earnings: Sequence[PurchaseEarning]) -> None:
    connection = await request_driver_connection(session)
    await connection.execute(_RECORD_PURCHASES, *array_columns(earnings, PurchaseEarning))


async def record_qualifications(
    session: AsyncSession, qualifications: Sequence[tuple[int, datetime, int | None]]
) -> None:
    """Count transactions toward tiers: (transaction id, when it counts, the qualifying points it declares, or
    None for what its type counts)."""
    if qualifications:
        await session.execute(
            text(
                "INSERT INTO transaction_qualification (transaction_id, qualifies_at, qualifying_points) "
                "VALUES (:t, :at, :points) ON CONFLICT (transaction_id) DO NOTHING"
            ),
            [{"t": t, "at": at, "points": points} for t, at, points in qualifications],
        )


async def debit(
    session: AsyncSession,
    customer_id: str,
    type_: str,
    points: int,
    reference: str,
    description: str,
    first_lot: int | None = None,
) -> Movement:
    return await _move(session, "points_debit", customer_id, type_, points, reference, description, first_lot)


async def lock_account(session: AsyncSession, customer_id: str) -> None:
    """Create the account if need be and lock it (before the purchase's row, the order every path uses)."""
    await session.execute(
        text(
            "INSERT INTO accounts (customer_id) VALUES (:c) "
            "ON CONFLICT (customer_id) DO UPDATE SET customer_id = excluded.customer_id"
        ),
        {"c": customer_id},
    )


async def expire_batch(session: AsyncSession, as_of: datetime, limit: int) -> tuple[int, int, int]:
    row = (
        await session.execute(
            text("SELECT r_accounts, r_lots, r_points FROM points_expire_batch(:as_of, :limit)"),
            {"as_of": as_of, "limit": limit},
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def expire_accounts(session: AsyncSession, customers: Sequence[str]) -> int:
    """Expire these accounts' due lots now, as the periodic job would on its next run; answers the lots expired."""
    if not customers:
        return 0
    expired = await session.execute(
        text(
            "SELECT coalesce(sum(e.r_lots), 0) FROM (SELECT c FROM unnest(CAST(:customers AS varchar[])) AS c"
            " ORDER BY c) AS a, LATERAL points_expire_account(a.c, now()) AS e"
        ),
        {"customers": list(customers)},
    )
    return int(expired.scalar_one())


async def now(session: AsyncSession) -> datetime:
    value: datetime = (await session.execute(text("SELECT now()"))).scalar_one()
    return value


# --- settings (earning rules, tiers) ---


async def get_setting(session: AsyncSession, key: str) -> Any:
    return (await session.execute(text("SELECT value FROM settings WHERE key = :k"), {"k": key})).scalar()


async def put_setting(session: AsyncSession, key: str, value: Any) -> None:
    await session.execute(
        text(
            "INSERT INTO settings (key, value) VALUES (:k, CAST(:v AS jsonb)) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()"
        ),
        {"k": key, "v": dumps(value).decode()},
    )


# Qualifying points of customer :c over the 365 days up to :at (now when null), each transaction counted at
# its business time: earns and reversals count their points, anything else only what it declares.
_QUALIFYING = """
    (SELECT coalesce(sum(coalesce(q.qualifying_points,
                                  CASE WHEN t.type IN ('earn', 'reverse') THEN t.points ELSE 0 END)), 0)
       FROM transactions t LEFT JOIN transaction_qualification q ON q.transaction_id = t.id
      WHERE t.customer_id = :c
        AND coalesce(q.qualifies_at, t.created_at) > coalesce(CAST(:at AS timestamptz), now()) - interval '365 days'
        AND coalesce(q.qualifies_at, t.created_at) <= coalesce(CAST(:at AS timestamptz), now()))
"""

# What the customer may spend: the account's balance less the lots past their expiry that the periodic run has
# not expired yet (it writes the same amounts; a redemption expires them first). Balances read through this never
# show points past their date, whenever the run comes.
SPENDABLE_BALANCE = """
    ((SELECT a.balance FROM accounts a WHERE a.customer_id = :c)
     - (SELECT coalesce(sum(l.remaining), 0) FROM lots l
         WHERE l.customer_id = :c AND l.remaining > 0 AND l.expires_at <= now()))
"""

_EARNING_CONTEXT = text(
    f"""
    SELECT (SELECT value FROM settings WHERE key = 'rules') AS rules,
           (SELECT value FROM settings WHERE key = 'tiers') AS tiers,
           {_QUALIFYING} AS qualifying
    """
)


_TIER_CONTEXT = text(f"SELECT (SELECT value FROM settings WHERE key = 'tiers') AS tiers, {_QUALIFYING} AS qualifying")


async def tier_context(session: AsyncSession, customer_id: str) -> tuple[Any, int]:
    """The tiers and the customer's qualifying points now."""
    row = (await session.execute(_TIER_CONTEXT, {"c": customer_id, "at": None})).one()
    return row.tiers, int(row.qualifying)


async def earning_context(session: AsyncSession, customer_id: str, at: datetime) -> tuple[Any, Any, int]:
    """The rules, the tiers and the customer's qualifying points in the 365 days up to `at`."""
    row = (await session.execute(_EARNING_CONTEXT, {"c": customer_id, "at": at})).one()
    return row.rules, row.tiers, int(row.qualifying)


async def record_qualification(session: AsyncSession, transaction_id: int, qualifies_at: datetime) -> None:
    """Count a transaction toward tiers at `qualifies_at` (its business time)."""
    await record_qualifications(session, [(transaction_id, qualifies_at, None)])


_BALANCE = text(
    f"""
    SELECT {SPENDABLE_BALANCE} AS balance,
           (SELECT value FROM settings WHERE key = 'tiers') AS tiers,
           {_QUALIFYING} AS qualifying,
           (SELECT coalesce(json_agg(json_build_object('points', e.points, 'expires_at', e.expires_at)
                                     ORDER BY e.expires_at), '[]'::json)
              FROM (SELECT l.expires_at, sum(l.remaining) AS points FROM lots l
                     WHERE l.customer_id = :c AND l.remaining > 0 AND l.expires_at > now()
                     GROUP BY l.expires_at ORDER BY l.expires_at LIMIT :expiring) e) AS expiring
    """
)


@dataclass(frozen=True)
class BalanceView:
    balance: int
    tiers: Any  # the tiers setting's JSON, None when never set
    qualifying: int
    expiring: list[dict[str, Any]]  # {points, expires_at}, soonest first


async def balance_view(session: AsyncSession, customer_id: str, expiring: int) -> BalanceView:
    row = (await session.execute(_BALANCE, {"c": customer_id, "expiring": expiring, "at": None})).one()
    return BalanceView(int(row.balance or 0), row.tiers, int(row.qualifying), list(row.expiring))


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    type: str
    points: int
    balance_after: int
    reference: str
    description: str
    created_at: datetime
    # a reward's entries: its redemption, the reward's name and the redemption's status
    reward_redemption_id: uuid.UUID | None
    reward_id: uuid.UUID | None
    reward_name: str | None
    reward_status: str | None


async def list_transactions(
    session: AsyncSession, customer_id: str, limit: int, before_id: int | None
) -> list[LedgerEntry]:
    # a reward's entries (reference `reward/<redemption id>`, written by the system only: API references
    # cannot hold a `/`) carry their redemption, and so the reward's name and the redemption's status
    query = (
        "SELECT t.id, t.type, t.points, t.balance_after, t.reference, t.description, t.created_at, "
        "d.id AS reward_redemption_id, d.reward_id, w.name AS reward_name, d.status AS reward_status "
        "FROM transactions t "
        "LEFT JOIN reward_redemptions d ON d.customer_id = t.customer_id AND d.id = "
        "CASE WHEN t.reference LIKE 'reward/%' THEN CAST(substr(t.reference, 8) AS uuid) END "
        "LEFT JOIN rewards w ON w.id = d.reward_id "
        "WHERE t.customer_id = :c {after} ORDER BY t.id DESC LIMIT :n"
    )
    params: dict[str, Any] = {"c": customer_id, "n": limit}
    if before_id is not None:
        params["before"] = before_id
    statement = text(query.format(after="AND t.id < :before" if before_id is not None else ""))
    return [LedgerEntry(**row._mapping) for row in await session.execute(statement, params)]


# --- purchases and refunds ---


async def lock_purchase(session: AsyncSession, customer_id: str, purchase_id: str) -> EarnedPurchase | None:
    """What a purchase earned and how much of it was refunded, locked until the transaction ends."""
    return await _first(
        session,
        EarnedPurchase,
        "SELECT points, lot_id, total, currency, refunded_amount, reversed_points, occurred_at "
        "FROM purchase_earnings WHERE customer_id = :c AND purchase_id = :p FOR UPDATE",
        {"c": customer_id, "p": purchase_id},
    )


@dataclass(frozen=True)
class RecordedRefund:
    purchase_id: str
    points: int
    transaction_id: int | None
    balance: int


async def find_refund(session: AsyncSession, customer_id: str, refund_id: str) -> RecordedRefund | None:
    return await _first(
        session,
        RecordedRefund,
        "SELECT purchase_id, points, transaction_id, balance FROM refunds WHERE customer_id = :c AND refund_id = :r",
        {"c": customer_id, "r": refund_id},
    )


async def record_refund(
    session: AsyncSession,
    customer_id: str,
    refund_id: str,
    purchase_id: str,
    amount: Decimal | None,
    points: int,
    transaction_id: int | None,
    balance: int,
    refunded_amount: Decimal,
) -> None:
    await session.execute(
        text(
            "INSERT INTO refunds (customer_id, refund_id, purchase_id, amount, points, transaction_id, balance) "
            "VALUES (:c, :r, :p, :amount, :points, :tx, :balance)"
        ),
        {
            "c": customer_id,
            "r": refund_id,
            "p": purchase_id,
            "amount": amount,
            "points": points,
            "tx": transaction_id,
            "balance": balance,
        },
    )
    await session.execute(
        text(
            "UPDATE purchase_earnings SET refunded_amount = :refunded, reversed_points = reversed_points + :points "
            "WHERE customer_id = :c AND purchase_id = :p"
        ),
        {"refunded": refunded_amount, "points": points, "c": customer_id, "p": purchase_id},
    )


async def account_balance(session: AsyncSession, customer_id: str) -> int:
    value = (
        await session.execute(text("SELECT balance FROM accounts WHERE customer_id = :c"), {"c": customer_id})
    ).scalar()
    return int(value or 0)


# --- reports ---

_LIABILITY = text(
    """
    SELECT to_char(date_trunc('month', l.expires_at AT TIME ZONE 'UTC'), 'YYYY-MM') AS month,
           sum(l.remaining) AS points
      FROM lots l WHERE l.remaining > 0
     GROUP BY 1 ORDER BY 1 NULLS LAST
    """
)
_LIABILITY_TOTALS = text(
    """
    SELECT coalesce(sum(-balance) FILTER (WHERE balance < 0), 0) AS negative,
           count(*) FILTER (WHERE balance > 0) AS holders
      FROM accounts
    """
)


async def liability(session: AsyncSession) -> tuple[list[LiabilityMonth], int, int]:
    """The points outstanding by expiry month, the points owed by negative balances, how many hold points."""
    months = [LiabilityMonth(month=row.month, points=int(row.points)) for row in await session.execute(_LIABILITY)]
    totals = (await session.execute(_LIABILITY_TOTALS)).one()
    return months, int(totals.negative), int(totals.holders)


_AUDIT = text(
    """
    WITH ledger AS (
        SELECT t.customer_id, sum(t.points) AS total,
               (array_agg(t.balance_after ORDER BY t.id DESC))[1] AS last_balance_after,
               count(*) FILTER (WHERE NOT t.chained) AS broken
          FROM (SELECT customer_id, id, points, balance_after,
                       balance_after - points = coalesce(lag(balance_after) OVER w, 0) AS chained
                  FROM transactions WINDOW w AS (PARTITION BY customer_id ORDER BY id)) t
         GROUP BY t.customer_id
    ), open_lots AS (
        SELECT customer_id, sum(remaining) AS remaining FROM lots GROUP BY customer_id
    ), checked AS (
        SELECT coalesce(a.customer_id, g.customer_id) AS customer_id, a.balance,
               coalesce(g.total, 0) AS ledger_sum, g.last_balance_after,
               coalesce(o.remaining, 0) AS lots_remaining, coalesce(g.broken, 0) AS broken_chain_links
          FROM accounts a
          FULL JOIN ledger g ON g.customer_id = a.customer_id
          LEFT JOIN open_lots o ON o.customer_id = coalesce(a.customer_id, g.customer_id)
    )
    SELECT (SELECT count(*) FROM checked) AS accounts_checked, m.*
      FROM (SELECT 1) one
      LEFT JOIN LATERAL (
        SELECT * FROM checked c
         WHERE c.balance IS NULL
            OR c.balance <> c.ledger_sum
            OR c.balance <> coalesce(c.last_balance_after, 0)
            OR c.lots_remaining <> greatest(c.balance, 0)
            OR c.broken_chain_links > 0
         ORDER BY c.customer_id LIMIT :limit
      ) m ON true
    """
)


async def audit(session: AsyncSession, limit: int) -> tuple[int, list[AuditMismatch]]:
    """How many accounts were checked, and the first `limit` whose balance disagrees with its ledger or lots."""
    rows = (await session.execute(_AUDIT, {"limit": limit})).all()
    checked = int(rows[0].accounts_checked) if rows else 0
    return checked, [
        AuditMismatch(
            customer_id=r.customer_id,
            balance=r.balance,
            ledger_sum=int(r.ledger_sum),
            last_balance_after=r.last_balance_after,
            lots_remaining=int(r.lots_remaining),
            broken_chain_links=int(r.broken_chain_links),
        )
        for r in rows
        if r.customer_id is not None
    ]
