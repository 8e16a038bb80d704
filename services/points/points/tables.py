"""The points service's tables, all in its own `points` schema.

`accounts.balance` is the running balance; `transactions` is the append-only ledger (a trigger refuses UPDATE,
DELETE and TRUNCATE); `lots` are the earned points still to be spent or expired. Invariants (checked by the
audit): balance = sum of the account's transactions = the last transaction's `balance_after`, and the lots'
remaining points add up to the balance when it is positive, to zero when it is not.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from kit.experiments import add_experiment_tables
from kit.tables import add_kit_tables

metadata = MetaData()
add_kit_tables(metadata)
add_experiment_tables(metadata)

# every balance and amount stays exact in a JSON client's double (migration points_bounds_and_expiry)
MAX_BALANCE = 2**53 - 1

TRANSACTION_TYPES = ("earn", "redeem", "expire", "reverse", "adjust", "cancel")

accounts = Table(
    "accounts",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"balance BETWEEN -{MAX_BALANCE} AND {MAX_BALANCE}", name="ck_accounts_balance_range"),
)

transactions = Table(
    "transactions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("customer_id", String(64), ForeignKey("accounts.customer_id"), nullable=False),
    Column("type", String(8), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("reference", String(64), nullable=False),
    Column("description", String(500), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("type IN ('earn', 'redeem', 'expire', 'reverse', 'adjust', 'cancel')", name="ck_transactions_type"),
    CheckConstraint("points <> 0", name="ck_transactions_points_nonzero"),
    CheckConstraint(f"points BETWEEN -{MAX_BALANCE} AND {MAX_BALANCE}", name="ck_transactions_points_range"),
    CheckConstraint(
        f"balance_after BETWEEN -{MAX_BALANCE} AND {MAX_BALANCE}", name="ck_transactions_balance_after_range"
    ),
    UniqueConstraint("customer_id", "type", "reference", name="uq_transactions_reference"),
    Index("ix_transactions_customer_id_id", "customer_id", "id"),
)

lots = Table(
    "lots",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("customer_id", String(64), ForeignKey("accounts.customer_id"), nullable=False),
    Column("transaction_id", BigInteger, ForeignKey("transactions.id"), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("remaining >= 0 AND remaining <= points", name="ck_lots_remaining"),
    CheckConstraint(f"points BETWEEN 0 AND {MAX_BALANCE}", name="ck_lots_points_range"),
    Index("ix_lots_open", "customer_id", "expires_at", "id", postgresql_where=text("remaining > 0")),
    Index("ix_lots_due", "expires_at", postgresql_where=text("remaining > 0")),
    Index("ix_lots_transaction", "transaction_id"),
)

purchase_earnings = Table(
    "purchase_earnings",
    metadata,
    Column("customer_id", String(64), nullable=False),
    Column("purchase_id", String(64), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("lot_id", BigInteger),
    Column("total", Numeric(20, 4), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("refunded_amount", Numeric(20, 4), nullable=False, server_default="0"),
    Column("reversed_points", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("occurred_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("customer_id", "purchase_id"),
)

# How a ledger transaction counts toward tiers when that differs from its type and recording time: an earn
# from a purchase counts at the purchase's `occurred_at`, an opening balance brings `qualifying_points`.
transaction_qualification = Table(
    "transaction_qualification",
    metadata,
    Column("transaction_id", BigInteger, ForeignKey("transactions.id"), primary_key=True),
    Column("qualifies_at", DateTime(timezone=True), nullable=False),
    Column("qualifying_points", BigInteger),
)

refunds = Table(
    "refunds",
    metadata,
    Column("customer_id", String(64), nullable=False),
    Column("refund_id", String(64), nullable=False),
    Column("purchase_id", String(64), nullable=False),
    Column("amount", Numeric(20, 4)),
    Column("points", BigInteger, nullable=False),
    Column("transaction_id", BigInteger),
    Column("balance", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("customer_id", "refund_id"),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("value", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The rewards catalogue (migration points_rewards). `stock_left` is `stock` less the standing redemptions
# (issuing, pending, fulfilled); both null means unlimited.
rewards = Table(
    "rewards",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", String(2000), nullable=False, server_default=""),
    Column("kind", String(8), nullable=False),
    Column("cost_points", BigInteger, nullable=False),
    Column("campaign_id", UUID(as_uuid=True)),
    Column("stock", BigInteger),
    Column("stock_left", BigInteger),
    Column("per_customer_limit", Integer),
    Column("min_tier", String(64)),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("image_url", String(2000)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('item', 'coupon')", name="ck_rewards_kind"),
    CheckConstraint("cost_points > 0", name="ck_rewards_cost"),
    CheckConstraint("(kind = 'coupon') = (campaign_id IS NOT NULL)", name="ck_rewards_campaign"),
    CheckConstraint(
        "(stock IS NULL) = (stock_left IS NULL) AND stock_left >= 0 AND stock_left <= stock", name="ck_rewards_stock"
    ),
    CheckConstraint("per_customer_limit >= 1", name="ck_rewards_limit"),
    Index("ix_rewards_cost", "cost_points", "id"),
)

# One row per redemption of a reward (a gift is one at no cost). `transaction_id` is its `redeem` ledger entry,
# `cancel_transaction_id` the `cancel` entry that gave the points back; both reference `reward/<id>`.
reward_redemptions = Table(
    "reward_redemptions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("reference", String(64), nullable=False),
    Column("reward_id", UUID(as_uuid=True), ForeignKey("rewards.id"), nullable=False),
    Column("source", String(8), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("status", String(12), nullable=False),
    Column("campaign_id", UUID(as_uuid=True)),
    Column("coupon_code", String(64)),
    Column("transaction_id", BigInteger),
    Column("cancel_transaction_id", BigInteger),
    Column("cancel_reason", String(32)),
    Column("issue_attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("issue_deadline", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("fulfilled_at", DateTime(timezone=True)),
    Column("cancelled_at", DateTime(timezone=True)),
    CheckConstraint("source IN ('customer', 'gift')", name="ck_reward_redemptions_source"),
    CheckConstraint("status IN ('issuing', 'pending', 'fulfilled', 'cancelled')", name="ck_reward_redemptions_status"),
    CheckConstraint("points >= 0", name="ck_reward_redemptions_points"),
    UniqueConstraint("customer_id", "reference", name="uq_reward_redemptions_reference"),
    Index(
        "ix_reward_redemptions_standing",
        "customer_id",
        "reward_id",
        postgresql_where=text("status <> 'cancelled'"),
    ),
    Index("ix_reward_redemptions_open", "reward_id", postgresql_where=text("status IN ('issuing', 'pending')")),
    Index("ix_reward_redemptions_issuing", "next_attempt_at", postgresql_where=text("status = 'issuing'")),
    Index(
        "ix_reward_redemptions_pending",
        text("created_at DESC"),
        text("id DESC"),
        postgresql_where=text("status = 'pending'"),
    ),
)

# Which lots a redemption's points came from, so that a cancellation puts them back where they were (with
# their own expiry: cancelling must not be a way to make points live longer).
reward_redemption_lots = Table(
    "reward_redemption_lots",
    metadata,
    Column("redemption_id", UUID(as_uuid=True), ForeignKey("reward_redemptions.id"), nullable=False),
    Column("lot_id", BigInteger, ForeignKey("lots.id"), nullable=False),
    Column("points", BigInteger, nullable=False),
    PrimaryKeyConstraint("redemption_id", "lot_id"),
)
