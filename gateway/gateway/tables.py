"""The gateway's tables, in its own `gateway` schema."""

from sqlalchemy import ARRAY, Column, DateTime, MetaData, String, Table, func
from sqlalchemy.dialects.postgresql import UUID

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
