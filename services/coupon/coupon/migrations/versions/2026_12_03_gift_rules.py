"""Gift rules: a surprise rule grants either a coupon of a campaign or a catalogue item of the points service
(`reward_id`; the points service is told by a `reward.gift_granted` event).

Revision ID: coupon_gift_rules
Revises: coupon_reward_issuance
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "coupon_gift_rules"
down_revision: str | None = "coupon_reward_issuance"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("coupon_rules", sa.Column("reward_id", postgresql.UUID(as_uuid=True)))
    op.alter_column("coupon_rules", "campaign_id", nullable=True)
    op.create_check_constraint(
        "ck_coupon_rules_grants_one", "coupon_rules", "(campaign_id IS NULL) <> (reward_id IS NULL)"
    )


def downgrade() -> None:
    op.drop_constraint("ck_coupon_rules_grants_one", "coupon_rules", type_="check")
    op.execute("DELETE FROM coupon_rules WHERE campaign_id IS NULL")
    op.alter_column("coupon_rules", "campaign_id", nullable=False)
    op.drop_column("coupon_rules", "reward_id")
