"""The tables a lever-owning service keeps for experiments (coupon, points, survey): the experiments the gateway
attached to its levers, and every reward its levers gave or withheld during one. A service adds them to its metadata
with :func:`add_experiment_tables` and creates them in its `<service>_experiments` migration."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import UUID

__all__ = ["add_experiment_tables", "create_experiment_tables", "experiment_rewards", "experiments"]

_metadata = MetaData()

experiments = Table(
    "experiments",
    _metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("lever_type", String(32), nullable=False),
    Column("lever_id", String(100), nullable=False),
    Column("holdout_percent", SmallInteger, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True)),
    Column("stopped_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_experiments_lever", "lever_type", "lever_id"),
)

# One row per reward a lever gave or withheld during an experiment, and per cost found later (a coupon's
# discount at redemption): `exposes` says whether the row is the lever firing for the customer.
experiment_rewards = Table(
    "experiment_rewards",
    _metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("experiment_id", UUID(as_uuid=True), nullable=False),
    Column("key", String(200), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("arm", String(9), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("exposes", Boolean, nullable=False),
    Column("withheld", Boolean, nullable=False),
    Column("points", BigInteger),
    Column("money", Numeric(18, 4)),
    Column("currency", String(3)),
    Column("reference", String(100)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_experiment_rewards_key", "experiment_id", "key", unique=True),
    Index("ix_experiment_rewards_reference", "reference", postgresql_where="reference IS NOT NULL"),
)


def add_experiment_tables(metadata: MetaData) -> None:
    """Give a lever-owning service's metadata the experiment tables, so `alembic check` sees them as its own."""
    for table in (experiments, experiment_rewards):
        if table.name not in metadata.tables:
            table.to_metadata(metadata)


def create_experiment_tables(bind: object) -> None:
    """Called from a service's `<service>_experiments` migration (`op.get_bind()`)."""
    _metadata.create_all(bind)  # type: ignore[arg-type]
