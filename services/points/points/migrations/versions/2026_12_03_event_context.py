"""Outbox events carry the business time of what they describe and the request id that caused them.

Revision ID: points_event_context
Revises: points_lots_by_transaction
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

from kit.tables import add_event_context, drop_event_context

revision: str = "points_event_context"
down_revision: str | None = "points_lots_by_transaction"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    add_event_context(op.get_bind())


def downgrade() -> None:
    drop_event_context(op.get_bind())
