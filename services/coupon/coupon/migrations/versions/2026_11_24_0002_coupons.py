"""Campaigns, codes, code generation jobs, redemptions, per-customer uses and surprise rules.

Revision ID: coupon_0002
Revises: coupon_0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "coupon_0002"
down_revision: str | None = "coupon_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "campaigns",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("discount_type", sa.String(16), nullable=False),
        sa.Column("discount_value", sa.Numeric, nullable=False),
        sa.Column("currency", sa.String(3)),
        sa.Column("max_discount", sa.Numeric),
        sa.Column("code_prefix", sa.String(16), nullable=False, server_default=""),
        sa.Column("code_length", sa.SmallInteger, nullable=False),
        sa.Column("charset", sa.String(16), nullable=False),
        sa.Column("per_code_limit", sa.Integer, nullable=False),
        sa.Column("per_customer_limit", sa.Integer, nullable=False),
        sa.Column("total_limit", sa.Integer),
        sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
        sa.Column("min_order_total", sa.Numeric),
        sa.Column("categories", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("valid_from", sa.DateTime(timezone=True)),
        sa.Column("valid_until", sa.DateTime(timezone=True)),
        sa.Column("active", sa.Boolean, nullable=False, server_default="true"),
        sa.Column("generated", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("issued", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reserved", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("issue_cursor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_campaigns_format", "campaigns", ["code_prefix", "code_length", "charset"])
    op.create_table(
        "codes",
        sa.Column("code", sa.String(64, collation="C"), primary_key=True),
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
        sa.Column("issued_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "ix_codes_campaign_seq",
        "codes",
        ["campaign_id", "seq"],
        postgresql_using="brin",
        postgresql_with={"pages_per_range": "32", "autosummarize": "on"},
    )
    op.create_index(
        "ix_codes_customer",
        "codes",
        ["customer_id", "issued_at", "code"],
        postgresql_where=sa.text("customer_id IS NOT NULL"),
    )
    op.create_table(
        "code_jobs",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("campaigns.id"), nullable=False),
        sa.Column("requested", sa.Integer, nullable=False),
        sa.Column("generated", sa.Integer, nullable=False, server_default="0"),
        sa.Column("seq_start", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_code_jobs_campaign", "code_jobs", ["campaign_id", "created_at"])
    op.create_index(
        "ix_code_jobs_unfinished",
        "code_jobs",
        ["created_at"],
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )
    op.create_table(
        "redemptions",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("order_total", sa.Numeric, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("discount_amount", sa.Numeric, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("rolled_back_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("code", "order_id", name="uq_redemptions_code_order"),
    )
    op.create_index("ix_redemptions_campaign", "redemptions", ["campaign_id"])
    op.create_table(
        "customer_uses",
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "customer_id"),
    )
    op.create_table(
        "coupon_rules",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("campaigns.id"), nullable=False),
        sa.Column("trigger_type", sa.String(32), nullable=False),
        sa.Column("n", sa.Integer),
        sa.Column("amount", sa.Numeric),
        sa.Column("currency", sa.String(3)),
        sa.Column("active", sa.Boolean, nullable=False, server_default="true"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_coupon_rules_trigger", "coupon_rules", ["trigger_type"], postgresql_where=sa.text("active"))
    op.create_table(
        "rule_firings",
        sa.Column("rule_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("event_key", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("code", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("rule_id", "event_key"),
    )
    op.create_table(
        "purchases_seen",
        sa.Column("purchase_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "customer_purchase_counts",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("purchases", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "customer_purchase_counts",
        "purchases_seen",
        "rule_firings",
        "coupon_rules",
        "customer_uses",
        "redemptions",
        "code_jobs",
        "codes",
        "campaigns",
    ):
        op.drop_table(table)
