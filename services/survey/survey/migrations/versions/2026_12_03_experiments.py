"""Experiments on this service's levers: the experiments the gateway attached, and every reward given or
withheld during one (kit.experiments).

Revision ID: survey_experiments
Revises: survey_opt_out_imports
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from kit.experiments import create_experiment_tables

revision: str = "survey_experiments"
down_revision: str | None = "survey_opt_out_imports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    create_experiment_tables(op.get_bind())
    op.add_column(
        "invitations", sa.Column("reward_withheld", sa.Boolean, nullable=False, server_default=sa.text("false"))
    )


def downgrade() -> None:
    op.drop_column("invitations", "reward_withheld")
    op.drop_table("experiment_rewards")
    op.drop_table("experiments")
