"""The recommend service's tables, all in its own `recommend` schema.

- `products`: the catalog; `seq` takes the next value of `catalog_seq` on every change, so a serving process
  sees in one cheap `max(seq)` whether its in-memory copy of the catalog is stale.
- `interactions`: every purchase line as received (imports and `purchase.created` events), append-only.
- `customer_products`: one row per (customer, product) kept up to date with each interaction: how many separate
  purchases, the quantity, the first and the last time. Training and serving read this, never the raw log.
- `preferences`: what a customer told us (categories to favour and to exclude).
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Sequence,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY

from kit.tables import add_kit_tables

metadata = MetaData()
add_kit_tables(metadata)

catalog_seq = Sequence("catalog_seq", metadata=metadata)
model_version_seq = Sequence("model_version_seq", metadata=metadata)

products = Table(
    "products",
    metadata,
    Column("product_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("category", String(100), nullable=False),
    Column("price", Numeric(18, 4)),
    Column("currency", String(3)),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("seq", BigInteger, catalog_seq, nullable=False, server_default=catalog_seq.next_value()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_products_seq", "seq"),
)

interactions = Table(
    "interactions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("customer_id", String(64), nullable=False),
    Column("product_id", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("source", String(80), nullable=False),
    Index("ix_interactions_customer_source", "customer_id", "source"),
)

customer_products = Table(
    "customer_products",
    metadata,
    Column("customer_id", String(64), nullable=False),
    Column("product_id", String(64), nullable=False),
    Column("purchases", Integer, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("first_at", DateTime(timezone=True), nullable=False),
    Column("last_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("customer_id", "product_id"),
)

preferences = Table(
    "preferences",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("categories", ARRAY(String(100)), nullable=False),
    Column("excluded_categories", ARRAY(String(100)), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Trained models (recommend.store's format), newest kept with a few before it: the worker holding the training
# lock writes one, every api replica loads the newest.
models = Table(
    "models",
    metadata,
    Column("version", BigInteger, primary_key=True),
    Column("trained_by", String(200), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("interactions", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
)

# Retraining asked for through the API (one row per request, made in the request's transaction with a NOTIFY on
# `recommend_training`): a recommend worker trains until the newest stored model covers the newest request.
training_requests = Table(
    "training_requests",
    metadata,
    Column("version", BigInteger, primary_key=True),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# What a customer's feedback says about a product bought: `refunded` (never offered back to that customer) or
# `detractor` (in an order the customer rated 0-6 on an NPS question: weighs less, see FEEDBACK_WEIGHT).
feedback = Table(
    "feedback",
    metadata,
    Column("customer_id", String(64), nullable=False),
    Column("product_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("purchase_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("customer_id", "product_id", "kind"),
    CheckConstraint("kind IN ('refunded', 'detractor')", name="ck_feedback_kind"),
)
