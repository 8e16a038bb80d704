"""The gateway's tables, in its own `gateway` schema."""

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    func,
)
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
    Column("customer_id", String(64), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("body", JSONB, nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Typed copies of the body's business time and total, kept by PostgreSQL itself whoever inserts the row,
    # so experiment results aggregate purchases in SQL through an index instead of parsing JSON.
    Column("occurred_at", DateTime(timezone=True), Computed("purchase_occurred_at(body)", persisted=True)),
    Column("total", Numeric, Computed("((body ->> 'total'::text))::numeric", persisted=True)),
    Index("ix_purchases_customer_time", "customer_id", "occurred_at", postgresql_include=["total"]),
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

# Experiments on the levers (docs/experiments.md). The gateway owns them: what they are, who was exposed to which
# arm and when, what was given or withheld; the services owning the levers hold a copy of each experiment and
# report every reward given or withheld as an `experiment.reward` event.
experiments = Table(
    "experiments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("lever_type", String(32), nullable=False),
    Column("lever_id", String(100), nullable=False),
    Column("holdout_percent", SmallInteger, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True)),
    Column("stopped_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_experiments_created", "created_at", "id"),
    # at most one experiment on a lever until it is stopped
    Index("ix_experiments_live_lever", "lever_type", "lever_id", unique=True, postgresql_where="stopped_at IS NULL"),
)

experiment_exposures = Table(
    "experiment_exposures",
    metadata,
    Column("experiment_id", UUID(as_uuid=True), ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("arm", String(9), nullable=False),
    Column("exposed_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("experiment_id", "customer_id"),
    Index("ix_experiment_exposures_customer", "customer_id"),
    Index("ix_experiment_exposures_arm", "experiment_id", "arm"),
)

# Each exposed customer's purchases after their exposure, by day after it (day d: more than d - 1 and at most d
# days of 24 hours later, up to 365), kept by triggers on purchases and exposures (migration
# gateway_experiment_outcomes): the results over a window of W days add up the rows with day <= W.
experiment_outcomes = Table(
    "experiment_outcomes",
    metadata,
    Column("experiment_id", UUID(as_uuid=True), nullable=False),
    Column("arm", String(9), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("day", Integer, nullable=False),
    Column("purchases", Integer, nullable=False),
    Column("revenue", Numeric, nullable=False),
    PrimaryKeyConstraint("experiment_id", "arm", "customer_id", "day", postgresql_include=["purchases", "revenue"]),
    Index("ix_experiment_outcomes_customer", "customer_id"),
)

experiment_rewards = Table(
    "experiment_rewards",
    metadata,
    Column("experiment_id", UUID(as_uuid=True), ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(200), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("arm", String(9), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("exposes", Boolean, nullable=False),
    Column("withheld", Boolean, nullable=False),
    Column("points", BigInteger),
    Column("money", Numeric(18, 4)),
    Column("currency", String(3)),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("experiment_id", "key"),
)

# A console session (gateway/console): the cookie holds a random token, the table only its hash. A partner's
# session names its API key, so revoking the key ends the session; an admin's holds a fingerprint of the admin
# key, so rotating the key ends it.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("principal_kind", String(16), nullable=False),
    Column("api_key_id", UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="CASCADE")),
    Column("admin_fingerprint", String(64)),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# The customer overview's read model (gateway/overview.py): one row per customer and service.
overview_parts = Table(
    "overview_parts",
    metadata,
    Column("customer_id", String(64), nullable=False),
    Column("service", String(16), nullable=False),
    Column("body", JSONB),
    Column("changed", BigInteger, nullable=False, server_default="0"),
    Column("seen", BigInteger, nullable=False, server_default="0"),
    Column("fetched_at", DateTime(timezone=True)),
    Column("fresh_until", DateTime(timezone=True)),
    # moments after which the row must be fetched again (a survey invitation falling due), pruned when fetched
    Column("due", ARRAY(DateTime(timezone=True))),
    PrimaryKeyConstraint("customer_id", "service"),
    Index("ix_overview_parts_stale", "service", postgresql_where="changed > seen"),
    Index("ix_overview_parts_due", "service", postgresql_where="due IS NOT NULL"),
)
