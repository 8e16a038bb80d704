"""The rewards catalogue: rewards, their redemptions (and the lots each took its points from), a `cancel`
ledger type, and the PL/pgSQL functions that redeem and cancel.

A redemption is one function call, so the points, the stock and the redemption commit together: the account
row is locked first (redemptions of one customer take turns, so the per-customer limit is counted exactly),
then the stock is taken with `UPDATE rewards SET stock_left = stock_left - 1 WHERE stock_left > 0` (never
oversold: a waiting UPDATE re-checks the condition on the row as committed). An unlimited reward is not
written at all (it would make every redemption of it wait on one row); it is locked `FOR KEY SHARE`, which
redemptions share, so that a PATCH giving it a stock (`SELECT ... FOR UPDATE` first) waits for them and counts
what they redeemed. Lock order everywhere: account, redemption, reward.

Revision ID: points_rewards
Revises: points_experiments
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "points_rewards"
down_revision: str | None = "points_experiments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = """
-- Redeems a reward for a customer (p_gift: at no cost, ignoring tier and limit; still takes stock).
-- Outcomes: created, replayed (the reference was used: that redemption), reward_not_found, inactive,
-- tier_too_low, limit_reached, insufficient, out_of_stock.
CREATE FUNCTION points_redeem_reward(
    p_customer varchar, p_reward uuid, p_reference varchar, p_id uuid, p_gift boolean, p_default_tiers jsonb,
    p_retry_after interval, p_issue_deadline interval
)
RETURNS TABLE (
    r_outcome text, r_id uuid, r_reward_id uuid, r_points bigint, r_balance bigint, r_status varchar,
    r_coupon_code varchar, r_cancel_reason varchar, r_kind varchar, r_campaign_id uuid, r_name varchar,
    r_created_at timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
    v_reward rewards%ROWTYPE;
    v_threshold bigint;
    v_qualifying bigint;
    v_used bigint;
    v_stock bigint;
    v_cost bigint;
    v_tx bigint;
    v_lot_ids bigint[];
    v_lot_left bigint[];
BEGIN
    SELECT a.balance INTO v_balance FROM accounts a WHERE a.customer_id = p_customer FOR UPDATE;
    SELECT 'replayed', d.id, d.reward_id, d.points, d.balance_after, d.status, d.coupon_code, d.cancel_reason,
           w.kind, d.campaign_id, w.name, d.created_at
      INTO r_outcome, r_id, r_reward_id, r_points, r_balance, r_status, r_coupon_code, r_cancel_reason,
           r_kind, r_campaign_id, r_name, r_created_at
      FROM reward_redemptions d JOIN rewards w ON w.id = d.reward_id
     WHERE d.customer_id = p_customer AND d.reference = p_reference;
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    r_reward_id := p_reward;
    r_balance := coalesce(v_balance, 0);
    SELECT * INTO v_reward FROM rewards w WHERE w.id = p_reward;
    IF NOT FOUND THEN
        r_outcome := 'reward_not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    r_kind := v_reward.kind;
    r_name := v_reward.name;
    v_cost := CASE WHEN p_gift THEN 0 ELSE v_reward.cost_points END;
    r_points := v_cost;
    IF NOT v_reward.active THEN
        r_outcome := 'inactive';
        RETURN NEXT;
        RETURN;
    END IF;
    IF NOT p_gift THEN
        IF v_reward.min_tier IS NOT NULL THEN
            SELECT (t ->> 'threshold')::bigint INTO v_threshold
              FROM jsonb_array_elements(coalesce((SELECT s.value FROM settings s WHERE s.key = 'tiers'),
                                                 p_default_tiers)) t
             WHERE t ->> 'name' = v_reward.min_tier;
            -- qualifying points as the balance view counts them (points.repository._QUALIFYING, up to now)
            SELECT greatest(coalesce(sum(coalesce(q.qualifying_points,
                                CASE WHEN t.type IN ('earn', 'reverse') THEN t.points ELSE 0 END)), 0), 0)
              INTO v_qualifying
              FROM transactions t LEFT JOIN transaction_qualification q ON q.transaction_id = t.id
             WHERE t.customer_id = p_customer
               AND coalesce(q.qualifies_at, t.created_at) > now() - interval '365 days'
               AND coalesce(q.qualifies_at, t.created_at) <= now();
            IF v_threshold IS NULL OR v_qualifying < v_threshold THEN
                r_outcome := 'tier_too_low';
                RETURN NEXT;
                RETURN;
            END IF;
        END IF;
        IF v_reward.per_customer_limit IS NOT NULL THEN
            SELECT count(*) INTO v_used FROM reward_redemptions d
             WHERE d.customer_id = p_customer AND d.reward_id = p_reward AND d.status <> 'cancelled'
               AND d.source = 'customer';
            IF v_used >= v_reward.per_customer_limit THEN
                r_outcome := 'limit_reached';
                RETURN NEXT;
                RETURN;
            END IF;
        END IF;
        IF v_balance IS NULL OR v_balance < v_cost THEN
            r_outcome := 'insufficient';
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    IF v_reward.stock_left IS NULL THEN
        SELECT w.stock_left INTO v_stock FROM rewards w WHERE w.id = p_reward FOR KEY SHARE;
    END IF;
    IF v_reward.stock_left IS NOT NULL OR v_stock IS NOT NULL THEN
        UPDATE rewards w SET stock_left = w.stock_left - 1 WHERE w.id = p_reward AND w.stock_left > 0;
        IF NOT FOUND THEN
            -- out of stock, unless it was made unlimited meanwhile
            SELECT w.stock_left INTO v_stock FROM rewards w WHERE w.id = p_reward FOR KEY SHARE;
            IF v_stock IS NOT NULL THEN
                r_outcome := 'out_of_stock';
                RETURN NEXT;
                RETURN;
            END IF;
        END IF;
    END IF;
    IF v_cost > 0 THEN
        UPDATE accounts a SET balance = v_balance - v_cost, updated_at = now() WHERE a.customer_id = p_customer;
        INSERT INTO transactions (customer_id, type, points, balance_after, reference, description)
        VALUES (p_customer, 'redeem', -v_cost, v_balance - v_cost, 'reward/' || p_id,
                left('Reward: ' || v_reward.name, 500))
        RETURNING id INTO v_tx;
        r_balance := v_balance - v_cost;
    END IF;
    INSERT INTO reward_redemptions (
        id, customer_id, reference, reward_id, source, points, balance_after, status, campaign_id, transaction_id,
        next_attempt_at, issue_deadline
    ) VALUES (
        p_id, p_customer, p_reference, p_reward, CASE WHEN p_gift THEN 'gift' ELSE 'customer' END, v_cost,
        r_balance, CASE WHEN v_reward.kind = 'coupon' THEN 'issuing' ELSE 'pending' END, v_reward.campaign_id, v_tx,
        CASE WHEN v_reward.kind = 'coupon' THEN now() + p_retry_after END,
        CASE WHEN v_reward.kind = 'coupon' THEN now() + p_issue_deadline END
    )
    RETURNING id, status, campaign_id, created_at INTO r_id, r_status, r_campaign_id, r_created_at;
    IF v_cost > 0 THEN
        SELECT array_agg(o.id), array_agg(o.remaining) INTO v_lot_ids, v_lot_left
          FROM lots o WHERE o.customer_id = p_customer AND o.remaining > 0;
        IF points_take_from_lots(p_customer, v_cost, NULL) <> v_cost THEN
            RAISE EXCEPTION 'points: lots of % do not cover its balance', p_customer;
        END IF;
        INSERT INTO reward_redemption_lots (redemption_id, lot_id, points)
        SELECT p_id, b.id, b.remaining - l.remaining
          FROM unnest(v_lot_ids, v_lot_left) AS b(id, remaining) JOIN lots l ON l.id = b.id
         WHERE l.remaining < b.remaining;
    END IF;
    r_outcome := 'created';
    RETURN NEXT;
END $$;

-- Cancels a redemption whose status is one of p_from (p_customer: only that customer's), once: the points go
-- back into the lots they came from (those lots' expiry kept; what came from lots that have expired since is
-- credited and expired again at once, so a cancellation never makes points live longer), the stock comes back.
-- Outcomes: cancelled, replayed (already cancelled), not_found, not_cancellable.
CREATE FUNCTION points_cancel_reward_redemption(p_id uuid, p_customer varchar, p_from varchar[], p_reason varchar)
RETURNS TABLE (r_outcome text, r_status varchar, r_balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_customer varchar;
    v_balance bigint;
    v_r reward_redemptions%ROWTYPE;
    v_name varchar;
    v_tx bigint;
    v_expired bigint;
    v_restore bigint;
    v_lot record;
    v_n bigint;
BEGIN
    SELECT d.customer_id INTO v_customer FROM reward_redemptions d WHERE d.id = p_id;
    IF NOT FOUND OR (p_customer IS NOT NULL AND v_customer <> p_customer) THEN
        r_outcome := 'not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT a.balance INTO v_balance FROM accounts a WHERE a.customer_id = v_customer FOR UPDATE;
    SELECT * INTO v_r FROM reward_redemptions d WHERE d.id = p_id FOR UPDATE;
    r_status := v_r.status;
    r_balance := coalesce(v_balance, 0);
    IF v_r.status = 'cancelled' THEN
        r_outcome := 'replayed';
        RETURN NEXT;
        RETURN;
    END IF;
    IF NOT v_r.status = ANY (p_from) THEN
        r_outcome := 'not_cancellable';
        RETURN NEXT;
        RETURN;
    END IF;
    IF v_r.points > 0 THEN
        SELECT w.name INTO v_name FROM rewards w WHERE w.id = v_r.reward_id;
        INSERT INTO transactions (customer_id, type, points, balance_after, reference, description)
        VALUES (v_customer, 'cancel', v_r.points, v_balance + v_r.points, 'reward/' || p_id,
                left('Reward cancelled: ' || v_name, 500))
        RETURNING id INTO v_tx;
        SELECT coalesce(sum(rl.points), 0) INTO v_expired
          FROM reward_redemption_lots rl JOIN lots l ON l.id = rl.lot_id
         WHERE rl.redemption_id = p_id AND l.expires_at <= now();
        v_balance := v_balance + v_r.points;
        IF v_expired > 0 THEN
            v_balance := v_balance - v_expired;
            INSERT INTO transactions (customer_id, type, points, balance_after, reference, description)
            VALUES (v_customer, 'expire', -v_expired, v_balance, 'reward/' || p_id,
                    'Points expired (their lots expired while a reward held them)');
        END IF;
        UPDATE accounts a SET balance = v_balance, updated_at = now() WHERE a.customer_id = v_customer;
        -- the lots must hold max(balance, 0) again: a negative balance is repaid first
        v_restore := greatest(v_balance, 0) - greatest(v_balance - v_r.points + v_expired, 0);
        FOR v_lot IN
            SELECT rl.lot_id, rl.points FROM reward_redemption_lots rl JOIN lots l ON l.id = rl.lot_id
             WHERE rl.redemption_id = p_id AND (l.expires_at IS NULL OR l.expires_at > now())
             ORDER BY l.expires_at DESC NULLS FIRST, l.id DESC
        LOOP
            EXIT WHEN v_restore <= 0;
            v_n := LEAST(v_lot.points, v_restore);
            UPDATE lots SET remaining = remaining + v_n WHERE id = v_lot.lot_id;
            v_restore := v_restore - v_n;
        END LOOP;
        IF v_restore > 0 THEN
            RAISE EXCEPTION 'points: redemption % cannot restore its lots', p_id;
        END IF;
        r_balance := v_balance;
    END IF;
    UPDATE rewards w SET stock_left = w.stock_left + 1 WHERE w.id = v_r.reward_id AND w.stock_left IS NOT NULL;
    UPDATE reward_redemptions d
       SET status = 'cancelled', cancelled_at = now(), cancel_reason = p_reason, cancel_transaction_id = v_tx
     WHERE d.id = p_id;
    r_outcome := 'cancelled';
    r_status := 'cancelled';
    RETURN NEXT;
END $$;
"""

TYPES_BEFORE = "type IN ('earn', 'redeem', 'expire', 'reverse', 'adjust')"
TYPES_AFTER = "type IN ('earn', 'redeem', 'expire', 'reverse', 'adjust', 'cancel')"


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_constraint("ck_transactions_type", "transactions", type_="check")
    op.create_check_constraint("ck_transactions_type", "transactions", TYPES_AFTER)
    op.create_table(
        "rewards",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.String(2000), nullable=False, server_default=""),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("cost_points", sa.BigInteger, nullable=False),
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True)),
        sa.Column("stock", sa.BigInteger),
        sa.Column("stock_left", sa.BigInteger),
        sa.Column("per_customer_limit", sa.Integer),
        sa.Column("min_tier", sa.String(64)),
        sa.Column("active", sa.Boolean, nullable=False, server_default="true"),
        sa.Column("image_url", sa.String(2000)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('item', 'coupon')", name="ck_rewards_kind"),
        sa.CheckConstraint("cost_points > 0", name="ck_rewards_cost"),
        sa.CheckConstraint("(kind = 'coupon') = (campaign_id IS NOT NULL)", name="ck_rewards_campaign"),
        sa.CheckConstraint(
            "(stock IS NULL) = (stock_left IS NULL) AND stock_left >= 0 AND stock_left <= stock",
            name="ck_rewards_stock",
        ),
        sa.CheckConstraint("per_customer_limit >= 1", name="ck_rewards_limit"),
    )
    op.create_index("ix_rewards_cost", "rewards", ["cost_points", "id"])
    op.create_table(
        "reward_redemptions",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("reward_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("rewards.id"), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True)),
        sa.Column("coupon_code", sa.String(64)),
        sa.Column("transaction_id", sa.BigInteger),
        sa.Column("cancel_transaction_id", sa.BigInteger),
        sa.Column("cancel_reason", sa.String(32)),
        sa.Column("issue_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("issue_deadline", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True)),
        sa.Column("cancelled_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("source IN ('customer', 'gift')", name="ck_reward_redemptions_source"),
        sa.CheckConstraint(
            "status IN ('issuing', 'pending', 'fulfilled', 'cancelled')", name="ck_reward_redemptions_status"
        ),
        sa.CheckConstraint("points >= 0", name="ck_reward_redemptions_points"),
        sa.UniqueConstraint("customer_id", "reference", name="uq_reward_redemptions_reference"),
    )
    op.create_index(
        "ix_reward_redemptions_standing",
        "reward_redemptions",
        ["customer_id", "reward_id"],
        postgresql_where=sa.text("status <> 'cancelled'"),
    )
    op.create_index(
        "ix_reward_redemptions_open",
        "reward_redemptions",
        ["reward_id"],
        postgresql_where=sa.text("status IN ('issuing', 'pending')"),
    )
    op.create_index(
        "ix_reward_redemptions_issuing",
        "reward_redemptions",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'issuing'"),
    )
    op.create_table(
        "reward_redemption_lots",
        sa.Column(
            "redemption_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("reward_redemptions.id"), nullable=False
        ),
        sa.Column("lot_id", sa.BigInteger, sa.ForeignKey("lots.id"), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("redemption_id", "lot_id"),
    )
    # one statement per execute: the driver prepares statements, and a prepared statement holds one command
    for statement in FUNCTIONS.strip().split("\n\n"):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION points_cancel_reward_redemption(uuid, varchar, varchar[], varchar)")
    op.execute("DROP FUNCTION points_redeem_reward(varchar, uuid, varchar, uuid, boolean, jsonb, interval, interval)")
    for table in ("reward_redemption_lots", "reward_redemptions", "rewards"):
        op.drop_table(table)
    op.drop_constraint("ck_transactions_type", "transactions", type_="check")
    op.create_check_constraint("ck_transactions_type", "transactions", TYPES_BEFORE)
