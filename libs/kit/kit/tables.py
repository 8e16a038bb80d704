"""Tables the kit keeps in every service's own schema: stored idempotent responses, the outbox of
events with one delivery per consumer, and the ids of events already handled (the inbox).

A service adds them to its metadata with :func:`add_kit_tables` and creates them in its first migration
with :func:`create_kit_tables`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.engine import Connection

__all__ = [
    "add_event_context",
    "add_kit_tables",
    "create_kit_tables",
    "drop_event_context",
    "idempotency_keys",
    "kit_metadata",
    "outbox_deliveries",
    "outbox_events",
    "processed_events",
]

kit_metadata = MetaData()

idempotency_keys = Table(
    "idempotency_keys",
    kit_metadata,
    Column("caller", String(128), nullable=False),
    Column("route", String(512), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", SmallInteger, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("caller", "route", "key"),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

outbox_events = Table(
    "outbox_events",
    kit_metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # the business time of what the event describes (a purchase's own time); NULL in rows from before it
    # was stored, which the relay sends with their publishing time, as it did
    Column("occurred_at", DateTime(timezone=True)),
    Column("request_id", String(128)),
)

outbox_deliveries = Table(
    "outbox_deliveries",
    kit_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=True), ForeignKey("outbox_events.id", ondelete="CASCADE"), nullable=False),
    Column("consumer", String(32), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_outbox_deliveries_due", "next_attempt_at", postgresql_where="status = 'pending'"),
    Index("ix_outbox_deliveries_event", "event_id", "consumer", unique=True),
)

processed_events = Table(
    "processed_events",
    kit_metadata,
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def add_kit_tables(metadata: MetaData) -> None:
    """Give a service's metadata the kit's tables, so `alembic check` sees them as its own."""
    for table in kit_metadata.tables.values():
        if table.name not in metadata.tables:
            table.to_metadata(metadata)


def create_kit_tables(bind: object) -> None:
    """Called from a service's first migration (`op.get_bind()`); tables land in the service's schema."""
    kit_metadata.create_all(bind)  # type: ignore[arg-type]


def add_event_context(bind: Connection) -> None:
    """The migration that gave `outbox_events` its business time and request id (a service's migration calls
    it with `op.get_bind()`). Events still waiting for a delivery whose payload named their business time
    (`occurred_at`, where purchases and experiment rewards kept it) take it from there."""
    bind.execute(text("ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS occurred_at timestamptz"))
    bind.execute(text("ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS request_id varchar(128)"))
    bind.execute(
        text(
            "UPDATE outbox_events SET occurred_at = CAST(payload->>'occurred_at' AS timestamptz) "
            "WHERE occurred_at IS NULL AND payload->>'occurred_at' IS NOT NULL "
            "AND id IN (SELECT event_id FROM outbox_deliveries WHERE status = 'pending')"
        )
    )


def drop_event_context(bind: Connection) -> None:
    bind.execute(text("ALTER TABLE outbox_events DROP COLUMN IF EXISTS request_id, DROP COLUMN IF EXISTS occurred_at"))
