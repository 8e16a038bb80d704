"""A purchase's own time: tiers count qualifying points by when they were earned in the shop, not when the
ledger recorded them (an imported purchase of last year counts toward last year's tier).

`transaction_qualification` holds, for a ledger transaction whose tier counting differs from its type and
recording time, the time it counts at and (for an opening balance carrying a tier over) how many qualifying
points it brings. The ledger itself stays append-only and its functions unchanged. `purchase_earnings`
remembers the purchase's `occurred_at` so that a refund's reversal counts at the purchase's time too.

Revision ID: points_business_time
Revises: points_0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "points_business_time"
down_revision: str | None = "points_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transaction_qualification",
        sa.Column("transaction_id", sa.BigInteger, sa.ForeignKey("transactions.id"), primary_key=True),
        sa.Column("qualifies_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("qualifying_points", sa.BigInteger),
    )
    op.add_column("purchase_earnings", sa.Column("occurred_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("purchase_earnings", "occurred_at")
    op.drop_table("transaction_qualification")
