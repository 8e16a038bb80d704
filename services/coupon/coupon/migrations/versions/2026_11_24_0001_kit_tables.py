"""The kit's tables: idempotency keys, outbox and processed events.

Revision ID: coupon_0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from kit.tables import create_kit_tables

revision: str = "coupon_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    create_kit_tables(op.get_bind())


def downgrade() -> None:
    for table in ("processed_events", "outbox_deliveries", "outbox_events", "idempotency_keys"):
        op.drop_table(table)
