"""The points service's tables, all in its own `points` schema.

`accounts.balance` is the running balance; `transactions` is the append-only ledger (a trigger refuses UPDATE,
DELETE and TRUNCATE); `lots` are the earned points still to be spent or expired. Invariants (checked by the
audit): balance = sum of the account's transactions = the last transaction's `balance_after`, and the lots'
remaining points add up to the balance when it is positive, to zero when it is not.
"""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from kit.experiments import add_experiment_tables
from kit.tables import add_kit_tables

metadata = MetaData()
add_kit_tables(metadata)
add_experiment_tables(metadata)

TRANSACTION_TYPES = ("earn", "redeem", "expire", "reverse", "adjust")

accounts = Table(
    "accounts",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
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
    CheckConstraint("type IN ('earn', 'redeem', 'expire', 'reverse', 'adjust')", name="ck_transactions_type"),
    CheckConstraint("points <> 0", name="ck_transactions_points_nonzero"),
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
    Index("ix_lots_open", "customer_id", "expires_at", "id", postgresql_where=text("remaining > 0")),
    Index("ix_lots_due", "expires_at", postgresql_where=text("remaining > 0")),
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
