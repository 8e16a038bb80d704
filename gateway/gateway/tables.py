"""The gateway's tables, in its own `gateway` schema."""

from sqlalchemy import ARRAY, Boolean, Column, DateTime, ForeignKey, MetaData, Numeric, String, Table, func
from sqlalchemy.dialects.postgresql import JSONB, UUID

from kit.tables import add_kit_tables

metadata = MetaData()
add_kit_tables(metadata)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", ARRAY(String(32)), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)

purchases = Table(
    "purchases",
    metadata,
    Column("purchase_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("body_hash", String(64), nullable=False),
    Column("body", JSONB, nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", String(64), primary_key=True),
    Column("purchase_id", String(64), ForeignKey("purchases.purchase_id"), nullable=False, index=True),
    Column("amount", Numeric(18, 4), nullable=False),
    Column("full_refund", Boolean, nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# A revoked customer token stays listed until it would have expired anyway.
revoked_customer_tokens = Table(
    "revoked_customer_tokens",
    metadata,
    Column("token_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("revoked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Every token of the customer issued before `not_before` is revoked ("log out everywhere").
customer_token_cutoffs = Table(
    "customer_token_cutoffs",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("not_before", DateTime(timezone=True), nullable=False),
)
