"""The ledger: accounts, transactions (append-only), lots, purchase earnings, refunds, settings, and the
PL/pgSQL functions that move points.

Each value-moving operation is one function so that it costs one round trip and every statement in it runs
after the account row is locked, with a fresh snapshot (READ COMMITTED gives each statement of a VOLATILE
function its own snapshot): the duplicate-reference check and the lot consumption then see every committed
change of that account.

Revision ID: points_0002
Revises: points_0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "points_0002"
down_revision: str | None = "points_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = """
CREATE FUNCTION points_ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the points ledger is append-only (% refused)', TG_OP;
END $$;

CREATE TRIGGER transactions_append_only BEFORE UPDATE OR DELETE ON transactions
    FOR EACH ROW EXECUTE FUNCTION points_ledger_is_append_only();

CREATE TRIGGER transactions_no_truncate BEFORE TRUNCATE ON transactions
    FOR EACH STATEMENT EXECUTE FUNCTION points_ledger_is_append_only();

-- Takes up to p_points from the account's open lots: p_first_lot first (a reversal takes from the purchase's
-- own lot), then the lots that expire first. The caller holds the account lock. Returns the points taken.
CREATE FUNCTION points_take_from_lots(p_customer varchar, p_points bigint, p_first_lot bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint := p_points;
    v_first bigint := 0;
    v_rest bigint;
BEGIN
    IF v_left <= 0 THEN
        RETURN 0;
    END IF;
    IF p_first_lot IS NOT NULL THEN
        WITH before AS (
            SELECT o.id, o.remaining FROM lots o
             WHERE o.id = p_first_lot AND o.customer_id = p_customer AND o.remaining > 0
        )
        UPDATE lots l SET remaining = l.remaining - LEAST(b.remaining, v_left)
          FROM before b WHERE l.id = b.id
        RETURNING LEAST(b.remaining, v_left) INTO v_first;
        v_first := coalesce(v_first, 0);
        v_left := v_left - v_first;
        IF v_left = 0 THEN
            RETURN v_first;
        END IF;
    END IF;
    WITH ordered AS (
        SELECT o.id, o.remaining,
               sum(o.remaining) OVER (ORDER BY o.expires_at NULLS LAST, o.id) - o.remaining AS before
          FROM lots o
         WHERE o.customer_id = p_customer AND o.remaining > 0
    ), taken AS (
        UPDATE lots l SET remaining = l.remaining - LEAST(o.remaining, v_left - o.before)
          FROM ordered o
         WHERE l.id = o.id AND o.before < v_left
        RETURNING LEAST(o.remaining, v_left - o.before) AS n
    )
    SELECT coalesce(sum(n), 0) INTO v_rest FROM taken;
    RETURN v_first + v_rest;
END $$;

-- A redemption: never below zero. Outcome 'created', 'replayed' (the reference was used: the first
-- transaction) or 'insufficient'.
CREATE FUNCTION points_redeem(p_customer varchar, p_points bigint, p_reference varchar, p_description varchar)
RETURNS TABLE (r_outcome text, r_transaction_id bigint, r_points bigint, r_balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
    v_id bigint;
BEGIN
    SELECT a.balance INTO v_balance FROM accounts a WHERE a.customer_id = p_customer FOR UPDATE;
    SELECT 'replayed', t.id, -t.points, t.balance_after INTO r_outcome, r_transaction_id, r_points, r_balance
      FROM transactions t
     WHERE t.customer_id = p_customer AND t.type = 'redeem' AND t.reference = p_reference;
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    IF v_balance IS NULL OR v_balance < p_points THEN
        r_outcome := 'insufficient';
        r_points := p_points;
        r_balance := coalesce(v_balance, 0);
        RETURN NEXT;
        RETURN;
    END IF;
    UPDATE accounts a SET balance = v_balance - p_points, updated_at = now() WHERE a.customer_id = p_customer;
    INSERT INTO transactions (customer_id, type, points, balance_after, reference, description)
    VALUES (p_customer, 'redeem', -p_points, v_balance - p_points, p_reference, p_description)
    RETURNING id INTO v_id;
    IF points_take_from_lots(p_customer, p_points, NULL) <> p_points THEN
        RAISE EXCEPTION 'points: lots of % do not cover its balance', p_customer;
    END IF;
    r_outcome := 'created';
    r_transaction_id := v_id;
    r_points := p_points;
    r_balance := v_balance - p_points;
    RETURN NEXT;
END $$;

-- Adds points (earn, or a positive adjust): repays a negative balance first, the rest becomes a lot.
CREATE FUNCTION points_credit(
    p_customer varchar, p_type varchar, p_points bigint, p_reference varchar, p_description varchar,
    p_expires_at timestamptz
)
RETURNS TABLE (r_outcome text, r_transaction_id bigint, r_points bigint, r_balance bigint, r_lot_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
    v_id bigint;
BEGIN
    INSERT INTO accounts (customer_id) VALUES (p_customer) ON CONFLICT (customer_id) DO NOTHING;
    SELECT a.balance INTO v_balance FROM accounts a WHERE a.customer_id = p_customer FOR UPDATE;
    SELECT 'replayed', t.id, t.points, t.balance_after, l.id
      INTO r_outcome, r_transaction_id, r_points, r_balance, r_lot_id
      FROM transactions t LEFT JOIN lots l ON l.transaction_id = t.id
     WHERE t.customer_id = p_customer AND t.type = p_type AND t.reference = p_reference;
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    UPDATE accounts a SET balance = v_balance + p_points, updated_at = now() WHERE a.customer_id = p_customer;
    INSERT INTO transactions (customer_id, type, points, balance_after, reference, description)
    VALUES (p_customer, p_type, p_points, v_balance + p_points, p_reference, p_description)
    RETURNING id INTO v_id;
    IF v_balance + p_points > 0 THEN
        INSERT INTO lots (customer_id, transaction_id, points, remaining, expires_at)
        VALUES (p_customer, v_id, p_points, LEAST(p_points, v_balance + p_points), p_expires_at)
        RETURNING id INTO r_lot_id;
    END IF;
    r_outcome := 'created';
    r_transaction_id := v_id;
    r_points := p_points;
    r_balance := v_balance + p_points;
    RETURN NEXT;
END $$;

-- Takes points away (a reversal, or a negative adjust): may go below zero; lots cover what they can,
-- p_first_lot first.
CREATE FUNCTION points_debit(
    p_customer varchar, p_type varchar, p_points bigint, p_reference varchar, p_description varchar,
    p_first_lot bigint
)
RETURNS TABLE (r_outcome text, r_transaction_id bigint, r_points bigint, r_balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
    v_id bigint;
BEGIN
    INSERT INTO accounts (customer_id) VALUES (p_customer) ON CONFLICT (customer_id) DO NOTHING;
    SELECT a.balance INTO v_balance FROM accounts a WHERE a.customer_id = p_customer FOR UPDATE;
    SELECT 'replayed', t.id, -t.points, t.balance_after INTO r_outcome, r_transaction_id, r_points, r_balance
      FROM transactions t
     WHERE t.customer_id = p_customer AND t.type = p_type AND t.reference = p_reference;
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    UPDATE accounts a SET balance = v_balance - p_points, updated_at = now() WHERE a.customer_id = p_customer;
    INSERT INTO transactions (customer_id, type, points, balance_after, reference, description)
    VALUES (p_customer, p_type, -p_points, v_balance - p_points, p_reference, p_description)
    RETURNING id INTO v_id;
    IF points_take_from_lots(p_customer, LEAST(p_points, GREATEST(v_balance, 0)), p_first_lot)
       <> LEAST(p_points, GREATEST(v_balance, 0)) THEN
        RAISE EXCEPTION 'points: lots of % do not cover its balance', p_customer;
    END IF;
    r_outcome := 'created';
    r_transaction_id := v_id;
    r_points := p_points;
    r_balance := v_balance - p_points;
    RETURN NEXT;
END $$;

-- Expires what is left of the account's lots that expired by p_as_of: one 'expire' transaction per lot,
-- reference 'lot:<id>'. Returns (lots, points).
CREATE FUNCTION points_expire_account(p_customer varchar, p_as_of timestamptz, OUT r_lots integer, OUT r_points bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
    v_lot record;
BEGIN
    r_lots := 0;
    r_points := 0;
    SELECT a.balance INTO v_balance FROM accounts a WHERE a.customer_id = p_customer FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOR v_lot IN
        SELECT o.id, o.remaining FROM lots o
         WHERE o.customer_id = p_customer AND o.remaining > 0 AND o.expires_at <= p_as_of
         ORDER BY o.expires_at, o.id
    LOOP
        v_balance := v_balance - v_lot.remaining;
        UPDATE lots SET remaining = 0 WHERE id = v_lot.id;
        INSERT INTO transactions (customer_id, type, points, balance_after, reference, description)
        VALUES (p_customer, 'expire', -v_lot.remaining, v_balance, 'lot:' || v_lot.id, 'Points expired');
        r_lots := r_lots + 1;
        r_points := r_points + v_lot.remaining;
    END LOOP;
    IF r_lots > 0 THEN
        UPDATE accounts a SET balance = v_balance, updated_at = now() WHERE a.customer_id = p_customer;
    END IF;
END $$;

-- One batch of an expiry run: up to p_limit accounts with due lots, locked in customer_id order (so two
-- runs, or a run and the redemptions it meets, cannot deadlock).
CREATE FUNCTION points_expire_batch(
    p_as_of timestamptz, p_limit integer, OUT r_accounts integer, OUT r_lots integer, OUT r_points bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    v_customer varchar;
    v_lots integer;
    v_points bigint;
BEGIN
    r_accounts := 0;
    r_lots := 0;
    r_points := 0;
    FOR v_customer IN
        SELECT d.customer_id FROM (
            SELECT DISTINCT o.customer_id FROM lots o WHERE o.remaining > 0 AND o.expires_at <= p_as_of
        ) d ORDER BY d.customer_id LIMIT p_limit
    LOOP
        SELECT e.r_lots, e.r_points INTO v_lots, v_points FROM points_expire_account(v_customer, p_as_of) e;
        IF v_lots > 0 THEN
            r_accounts := r_accounts + 1;
            r_lots := r_lots + v_lots;
            r_points := r_points + v_points;
        END IF;
    END LOOP;
END $$;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "accounts",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("balance", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(64), sa.ForeignKey("accounts.customer_id"), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("description", sa.String(500), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("type IN ('earn', 'redeem', 'expire', 'reverse', 'adjust')", name="ck_transactions_type"),
        sa.CheckConstraint("points <> 0", name="ck_transactions_points_nonzero"),
        sa.UniqueConstraint("customer_id", "type", "reference", name="uq_transactions_reference"),
    )
    op.create_index("ix_transactions_customer_id_id", "transactions", ["customer_id", "id"])
    op.create_table(
        "lots",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(64), sa.ForeignKey("accounts.customer_id"), nullable=False),
        sa.Column("transaction_id", sa.BigInteger, sa.ForeignKey("transactions.id"), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("remaining >= 0 AND remaining <= points", name="ck_lots_remaining"),
    )
    op.create_index(
        "ix_lots_open", "lots", ["customer_id", "expires_at", "id"], postgresql_where=sa.text("remaining > 0")
    )
    op.create_index("ix_lots_due", "lots", ["expires_at"], postgresql_where=sa.text("remaining > 0"))
    op.create_table(
        "purchase_earnings",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("purchase_id", sa.String(64), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("lot_id", sa.BigInteger),
        sa.Column("total", sa.Numeric(20, 4), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("refunded_amount", sa.Numeric(20, 4), nullable=False, server_default="0"),
        sa.Column("reversed_points", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("customer_id", "purchase_id"),
    )
    op.create_table(
        "refunds",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("refund_id", sa.String(64), nullable=False),
        sa.Column("purchase_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.Numeric(20, 4)),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("transaction_id", sa.BigInteger),
        sa.Column("balance", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("customer_id", "refund_id"),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("value", postgresql.JSONB, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # one statement per execute: the driver prepares statements, and a prepared statement holds one command
    for statement in FUNCTIONS.strip().split("\n\n"):
        op.execute(statement)


def downgrade() -> None:
    for function in (
        "points_expire_batch(timestamptz, integer)",
        "points_expire_account(varchar, timestamptz)",
        "points_debit(varchar, varchar, bigint, varchar, varchar, bigint)",
        "points_credit(varchar, varchar, bigint, varchar, varchar, timestamptz)",
        "points_redeem(varchar, bigint, varchar, varchar)",
        "points_take_from_lots(varchar, bigint, bigint)",
    ):
        op.execute(f"DROP FUNCTION {function}")
    for table in ("settings", "refunds", "purchase_earnings", "lots", "transactions", "accounts"):
        op.drop_table(table)
    op.execute("DROP FUNCTION points_ledger_is_append_only()")
