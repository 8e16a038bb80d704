"""Keyed issuance for coupon rewards: one row per key (the points service's redemption id).

The first `issue` with a key assigns a code and records it; a `void` that comes first records the key as voided.
Every later call with the key answers what the row says, so the points service and this one can never
disagree about a redemption (docs/rewards.md).

Revision ID: coupon_reward_issuance
Revises: coupon_code_imports
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "coupon_reward_issuance"
down_revision: str | None = "coupon_code_imports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "reward_issuances",
        sa.Column("key", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True)),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("code", sa.String(64)),
        sa.Column("reason", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('issued', 'voided', 'refused')", name="ck_reward_issuances_status"),
    )


def downgrade() -> None:
    op.drop_table("reward_issuances")
