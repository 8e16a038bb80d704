"""Imports at import speed: the webhook trigger on `transactions` fires only for the types that send an event.

`points_webhook_event()` (migration points_webhooks) returns at once for an `adjust` (corrections and imported
opening balances send no webhook), but calling it still cost a PL/pgSQL call per row: about a fifth of a
10,000-line opening-balance import's database time. A `WHEN` condition on the trigger skips the call; the
events written are the same.

Revision ID: points_fast_import
Revises: points_debit_expires_first
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "points_fast_import"
down_revision: str | None = "points_debit_expires_first"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("DROP TRIGGER transactions_webhook_event ON transactions")
    op.execute(
        "CREATE TRIGGER transactions_webhook_event AFTER INSERT ON transactions FOR EACH ROW"
        " WHEN (NEW.type IN ('earn', 'redeem', 'reverse', 'expire')) EXECUTE FUNCTION points_webhook_event()"
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("DROP TRIGGER transactions_webhook_event ON transactions")
    op.execute(
        "CREATE TRIGGER transactions_webhook_event AFTER INSERT ON transactions"
        " FOR EACH ROW EXECUTE FUNCTION points_webhook_event()"
    )
