"""Training requests: `POST /v1/recommend/model/retrain` on any api replica records one (and notifies the channel
`recommend_training`); the recommend workers train for it.

Revision ID: recommend_training_requests
Revises: recommend_feedback
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "recommend_training_requests"
down_revision: str | None = "recommend_feedback"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "training_requests",
        sa.Column("version", sa.BigInteger, primary_key=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )


def downgrade() -> None:
    op.drop_table("training_requests")
