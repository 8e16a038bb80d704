"""Purchases keep one index by customer: `ix_purchases_customer_time` (customer, business time, total) serves
every lookup by customer that `ix_purchases_customer_id` served, and each imported purchase paid for both.

Revision ID: gateway_purchases_customer_index
Revises: gateway_event_context
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "gateway_purchases_customer_index"
down_revision: str | None = "gateway_event_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_purchases_customer_id", table_name="purchases")


def downgrade() -> None:
    op.create_index("ix_purchases_customer_id", "purchases", ["customer_id"])
