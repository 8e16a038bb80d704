"""Feedback on products a customer bought: refunded (never offered back) or in an order rated as a detractor
(weighs less).

Revision ID: recommend_feedback
Revises: recommend_models
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "recommend_feedback"
down_revision: str | None = "recommend_models"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "feedback",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("purchase_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("customer_id", "product_id", "kind"),
        sa.CheckConstraint("kind IN ('refunded', 'detractor')", name="ck_feedback_kind"),
    )
    # a refund or a rating finds the purchase's lines by customer
    op.create_index("ix_interactions_customer_source", "interactions", ["customer_id", "source"])


def downgrade() -> None:
    op.drop_index("ix_interactions_customer_source", table_name="interactions")
    op.drop_table("feedback")
