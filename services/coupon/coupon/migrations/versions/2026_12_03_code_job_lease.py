"""Code generation jobs are claimed under the kit's lease (kit.leases): `next_attempt_at` is when a job is due
(at once when queued; one lease after each batch while it runs), in place of the heartbeat that a claim compared
with its own staleness window.

Revision ID: coupon_code_job_lease
Revises: coupon_gift_rules
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "coupon_code_job_lease"
down_revision: str | None = "coupon_gift_rules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column(
        "code_jobs",
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # a job running now stays its worker's until its heartbeat is as stale as the old claim allowed (60 s)
    op.execute(
        "UPDATE code_jobs SET next_attempt_at = heartbeat_at + interval '60 seconds' "
        "WHERE status = 'running' AND heartbeat_at IS NOT NULL"
    )
    op.drop_column("code_jobs", "heartbeat_at")


def downgrade() -> None:
    op.add_column("code_jobs", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))
    op.execute("UPDATE code_jobs SET heartbeat_at = next_attempt_at - interval '60 seconds' WHERE status = 'running'")
    op.drop_column("code_jobs", "next_attempt_at")
