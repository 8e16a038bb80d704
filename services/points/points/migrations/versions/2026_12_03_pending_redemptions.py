"""The shop's fulfilment queue: every customer's pending items, newest first (`GET /v1/reward-redemptions?
status=pending`), read in index order from a partial index that holds only what waits to be handed over.

Revision ID: points_pending_redemptions
Revises: points_webhooks
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "points_pending_redemptions"
down_revision: str | None = "points_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_index(
        "ix_reward_redemptions_pending",
        "reward_redemptions",
        [sa.text("created_at DESC"), sa.text("id DESC")],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_reward_redemptions_pending", table_name="reward_redemptions")
