"""The webhook tables, in the gateway's schema (metadata shared with `gateway.tables`)."""

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import UUID

from gateway.tables import metadata

__all__ = ["webhook_attempts", "webhook_deliveries", "webhook_endpoints", "webhook_messages"]

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("url", String(2048), nullable=False),
    Column("events", ARRAY(String(64)), nullable=False),
    Column("description", String(500), nullable=False, server_default=""),
    Column("active", Boolean, nullable=False, server_default="true"),
    # Kept readable: signing needs the secret itself (as every Standard Webhooks sender does).
    Column("secret", String(128), nullable=False),
    # After a rotation the old secret signs alongside the new one until `previous_secret_expires_at`.
    Column("previous_secret", String(128)),
    Column("previous_secret_expires_at", DateTime(timezone=True)),
    # Set at the first failure after a success; an endpoint failing since long enough is disabled.
    Column("failing_since", DateTime(timezone=True)),
    Column("disabled_at", DateTime(timezone=True)),
    Column("disabled_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One event as partners see it: the exact body signed and sent on every attempt, to every endpoint.
webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_webhook_messages_created_at", "created_at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("endpoint_id", UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", String(64), ForeignKey("webhook_messages.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Retries go on until this much after it: set at creation and again by a re-drive.
    Column("retry_from", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_status_code", SmallInteger),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_webhook_deliveries_due", "endpoint_id", "next_attempt_at", postgresql_where="status = 'pending'"),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    Index("ix_webhook_deliveries_message", "message_id", "endpoint_id", unique=True),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "delivery_id", BigInteger, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    Column("status_code", SmallInteger),
    Column("latency_ms", Integer, nullable=False),
    Column("response_excerpt", Text),
    Column("error", Text),
)
