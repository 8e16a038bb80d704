"""The customer overview's read model: one row per customer and service holding that service's parts as the
overview shows them (docs/purchases.md#customer-overview).

`changed` counts the events heard about the customer from the service, `seen` the count the stored parts
reflect: a row with `changed > seen` waits for the refresher (a partial index finds those few rows).

Revision ID: gateway_overview_parts
Revises: gateway_experiment_outcomes
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "gateway_overview_parts"
down_revision: str | None = "gateway_experiment_outcomes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "overview_parts",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("body", postgresql.JSONB()),
        sa.Column("changed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("seen", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("fetched_at", sa.DateTime(timezone=True)),
        sa.Column("fresh_until", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("customer_id", "service"),
    )
    op.create_index("ix_overview_parts_stale", "overview_parts", ["service"], postgresql_where="changed > seen")


def downgrade() -> None:
    op.drop_table("overview_parts")
