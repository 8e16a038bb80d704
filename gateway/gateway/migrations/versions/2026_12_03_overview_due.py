"""The overview's read model learns when a stored part falls due: `due` holds the moments (a survey invitation's
`send_at`, from its `survey.invited` event) after which the row must be fetched again, pruned as it is.

Revision ID: gateway_overview_due
Revises: gateway_overview_parts
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "gateway_overview_due"
down_revision: str | None = "gateway_overview_parts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("overview_parts", sa.Column("due", postgresql.ARRAY(sa.DateTime(timezone=True))))
    op.create_index("ix_overview_parts_due", "overview_parts", ["service"], postgresql_where="due IS NOT NULL")


def downgrade() -> None:
    op.drop_index("ix_overview_parts_due", "overview_parts")
    op.drop_column("overview_parts", "due")
