"""Codes brought over from another programme keep their spelling (the code column holds the normalised form
that lookups match, `spelling` the one printed on receipts when it differs); `campaigns.imported` counts them,
so the format check before a lookup knows that codes outside every generated format exist.

Revision ID: coupon_code_imports
Revises: coupon_experiments
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "coupon_code_imports"
down_revision: str | None = "coupon_experiments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("codes", sa.Column("spelling", sa.String(64)))
    op.add_column("campaigns", sa.Column("imported", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("campaigns", "imported")
    op.drop_column("codes", "spelling")
