"""Money bounds and expiry at the point of spending.

- Balances, `balance_after`, transaction points and lots stay within ±(2^53-1): every such number is exact in
  a JSON client's double. CHECK constraints are the backstop; the functions refuse first, with the outcome
  `out_of_range` and nothing changed (the API answers 409 `balance_out_of_range`).
- A redemption (of points, or of a reward: `points_redeem_reward`) never spends a lot past its `expires_at`,
  whether or not the expiry job has run: when the account holds such a lot, the redemption first expires it,
  in its own transaction, with the same `expire` transactions the job writes. The check is one probe of the
  open-lots index; the common case (nothing due) adds no write and no round trip. `points_redeem_reward` is
  migration points_rewards' function with that block added after its replay check.

Revision ID: points_bounds_and_expiry
Revises: points_rewards
Create Date: 2026-12-03
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "points_bounds_and_expiry"
down_revision: str | None = "points_rewards"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX = 2**53 - 1

CONSTRAINTS = (
    ("accounts", "ck_accounts_balance_range", f"balance BETWEEN -{MAX} AND {MAX}"),
    ("transactions", "ck_transactions_balance_after_range", f"balance_after BETWEEN -{MAX} AND {MAX}"),
    ("transactions", "ck_transactions_points_range", f"points BETWEEN -{MAX} AND {MAX}"),
    ("lots", "ck_lots_points_range", f"points BETWEEN 0 AND {MAX}"),
)

# After the account row is locked and the replay check: what a redemption may spend excludes expired lots.
EXPIRE_DUE_LOTS = """\
    -- lots past their expires_at are expired before anything is spent, whether or not the expiry job ran
    IF EXISTS (
        SELECT 1 FROM lots o WHERE o.customer_id = p_customer AND o.remaining > 0 AND o.expires_at <= now()
    ) THEN
        PERFORM points_expire_account(p_customer, now());
        SELECT a.balance INTO v_balance FROM accounts a WHERE a.customer_id = p_customer;
    END IF;
"""
REPLAY_CHECKED = """\
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
"""

FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION points_redeem(
    p_customer varchar, p_points bigint, p_reference varchar, p_description varchar
)
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
{EXPIRE_DUE_LOTS}    IF v_balance IS NULL OR v_balance < p_points THEN
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

CREATE OR REPLACE FUNCTION points_credit(
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
    IF v_balance + p_points > {MAX} THEN
        r_outcome := 'out_of_range';
        r_points := p_points;
        r_balance := v_balance;
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

CREATE OR REPLACE FUNCTION points_debit(
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
    IF v_balance - p_points < -{MAX} THEN
        r_outcome := 'out_of_range';
        r_points := p_points;
        r_balance := v_balance;
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
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for table, name, check in CONSTRAINTS:
        # NOT VALID, then VALIDATE: the scan of existing rows does not block writes
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({check}) NOT VALID")
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")
    # one statement per execute: the driver prepares statements, and a prepared statement holds one command
    for statement in FUNCTIONS.strip().split("\n\n"):
        op.execute(statement)
    (reward,) = _functions("2026_12_03_rewards.py", "points_redeem_reward")
    assert REPLAY_CHECKED in reward, "points_redeem_reward changed: place EXPIRE_DUE_LOTS anew"
    op.execute(reward.replace(REPLAY_CHECKED, REPLAY_CHECKED + EXPIRE_DUE_LOTS, 1))


def _functions(migration: str, *names: str) -> list[str]:
    """`CREATE OR REPLACE` statements of these functions as an earlier migration created them."""
    spec = importlib.util.spec_from_file_location(migration, Path(__file__).with_name(migration))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [
        statement.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
        for statement in module.FUNCTIONS.strip().split("\n\n")
        if any(f"CREATE FUNCTION {name}(" in statement for name in names)
    ]


def downgrade() -> None:
    for statement in [
        *_functions("2026_11_24_0002_ledger.py", "points_redeem", "points_credit", "points_debit"),
        *_functions("2026_12_03_rewards.py", "points_redeem_reward"),
    ]:
        op.execute(statement)
    for table, name, _ in reversed(CONSTRAINTS):
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
