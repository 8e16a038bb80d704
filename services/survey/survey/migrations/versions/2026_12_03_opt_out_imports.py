"""Opt-outs brought over from another programme may name a customer, an email address, or both: the
suppression list gets its own key, one entry per customer and one per address (compared without case).

Revision ID: survey_opt_out_imports
Revises: survey_0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "survey_opt_out_imports"
down_revision: str | None = "survey_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("suppressions", sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False))
    op.drop_constraint("suppressions_pkey", "suppressions", type_="primary")
    op.create_primary_key("suppressions_pkey", "suppressions", ["id"])
    op.alter_column("suppressions", "customer_id", nullable=True)
    op.create_index(
        "uq_suppressions_customer",
        "suppressions",
        ["customer_id"],
        unique=True,
        postgresql_where=sa.text("customer_id IS NOT NULL"),
    )
    op.drop_index("ix_suppressions_email", "suppressions")
    op.create_index("ix_suppressions_email", "suppressions", [sa.text("lower(email)")])
    op.create_check_constraint(
        "ck_suppressions_someone", "suppressions", "customer_id IS NOT NULL OR email IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_constraint("ck_suppressions_someone", "suppressions", type_="check")
    op.drop_index("ix_suppressions_email", "suppressions")
    op.create_index("ix_suppressions_email", "suppressions", ["email"])
    op.drop_index("uq_suppressions_customer", "suppressions")
    op.execute("DELETE FROM suppressions WHERE customer_id IS NULL")
    op.drop_constraint("suppressions_pkey", "suppressions", type_="primary")
    op.alter_column("suppressions", "customer_id", nullable=False)
    op.create_primary_key("suppressions_pkey", "suppressions", ["customer_id"])
    op.drop_column("suppressions", "id")
