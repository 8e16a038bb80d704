"""Customer-token revocation: single tokens by their `jti`, and every token of a customer issued before a time.

Revision ID: gateway_0004_token_revocations
Revises: gateway_0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gateway_0004_token_revocations"
down_revision: str | None = "gateway_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "revoked_customer_tokens",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_revoked_customer_tokens_expires_at", "revoked_customer_tokens", ["expires_at"])
    op.create_table(
        "customer_token_cutoffs",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("customer_token_cutoffs")
    op.drop_table("revoked_customer_tokens")
