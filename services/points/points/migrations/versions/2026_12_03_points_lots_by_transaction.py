"""An index on `lots (transaction_id)`.

`points_credit`'s replay check joins the earlier transaction to its lot; without this index that join read every lot
in the ledger, so each replayed earning (a redelivered purchase, a retried adjustment) cost a scan of all lots.
Built concurrently, so a large ledger keeps taking writes while it builds.

Revision ID: points_lots_by_transaction
Revises: points_fast_import
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "points_lots_by_transaction"
down_revision: str | None = "points_fast_import"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # a concurrent build cut short leaves an invalid index behind: dropped, so this attempt builds it anew
        invalid = (
            op.get_bind()
            .execute(
                sa.text(
                    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname = 'ix_lots_transaction' AND c.relnamespace = current_schema()::regnamespace "
                    "AND NOT i.indisvalid"
                )
            )
            .first()
        )
        if invalid:
            op.execute("DROP INDEX CONCURRENTLY ix_lots_transaction")
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_lots_transaction ON lots (transaction_id)")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_lots_transaction")
