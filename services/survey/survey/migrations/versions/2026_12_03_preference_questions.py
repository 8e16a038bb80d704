"""An invitation sent after a purchase names the purchase, so a detractor's answer can say which order it rates
(preference questions themselves live in the survey's questions document: no column).

Revision ID: survey_preference_questions
Revises: survey_experiments
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "survey_preference_questions"
down_revision: str | None = "survey_experiments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("invitations", sa.Column("purchase_id", sa.String(64)))


def downgrade() -> None:
    op.drop_column("invitations", "purchase_id")
