"""Experiments: the registry, who was exposed to which arm and when, what was given or withheld; and the
purchases' business time and total as typed columns that PostgreSQL keeps, for the results query.

Revision ID: gateway_experiments
Revises: gateway_webhooks
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "gateway_experiments"
down_revision: str | None = "gateway_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    # A cast to timestamptz is only STABLE (it reads TimeZone for strings without an offset); every stored
    # `occurred_at` carries one (the API takes aware times only), so this wrapper is truly immutable.
    op.execute(
        "CREATE FUNCTION purchase_occurred_at(body jsonb) RETURNS timestamptz "
        "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (body ->> 'occurred_at')::timestamptz $$"
    )
    op.add_column(
        "purchases",
        sa.Column("occurred_at", sa.DateTime(timezone=True), sa.Computed("purchase_occurred_at(body)", persisted=True)),
    )
    op.add_column(
        "purchases",
        sa.Column("total", sa.Numeric, sa.Computed("((body ->> 'total'::text))::numeric", persisted=True)),
    )
    op.create_index(
        "ix_purchases_customer_time", "purchases", ["customer_id", "occurred_at"], postgresql_include=["total"]
    )
    op.create_table(
        "experiments",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("lever_type", sa.String(32), nullable=False),
        sa.Column("lever_id", sa.String(100), nullable=False),
        sa.Column("holdout_percent", sa.SmallInteger, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True)),
        sa.Column("stopped_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_experiments_created", "experiments", ["created_at", "id"])
    op.create_index(
        "ix_experiments_live_lever",
        "experiments",
        ["lever_type", "lever_id"],
        unique=True,
        postgresql_where="stopped_at IS NULL",
    )
    op.create_table(
        "experiment_exposures",
        sa.Column(
            "experiment_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("arm", sa.String(9), nullable=False),
        sa.Column("exposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "customer_id"),
    )
    op.create_table(
        "experiment_rewards",
        sa.Column(
            "experiment_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("arm", sa.String(9), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exposes", sa.Boolean, nullable=False),
        sa.Column("withheld", sa.Boolean, nullable=False),
        sa.Column("points", sa.BigInteger),
        sa.Column("money", sa.Numeric(18, 4)),
        sa.Column("currency", sa.String(3)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("experiment_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("experiment_rewards")
    op.drop_table("experiment_exposures")
    op.drop_table("experiments")
    op.drop_index("ix_purchases_customer_time", table_name="purchases")
    op.drop_column("purchases", "total")
    op.drop_column("purchases", "occurred_at")
    op.execute("DROP FUNCTION purchase_occurred_at(jsonb)")
