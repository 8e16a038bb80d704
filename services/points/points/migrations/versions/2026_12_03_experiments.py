"""Experiments on this service's levers: the experiments the gateway attached, and every reward given or
withheld during one (kit.experiments).

Revision ID: points_experiments
Revises: points_business_time
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

from kit.experiments import create_experiment_tables

revision: str = "points_experiments"
down_revision: str | None = "points_business_time"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    create_experiment_tables(op.get_bind())


def downgrade() -> None:
    op.drop_table("experiment_rewards")
    op.drop_table("experiments")
