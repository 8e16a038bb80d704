"""Catalog, interactions, per-customer product history, preferences.

Revision ID: recommend_0002
Revises: recommend_0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "recommend_0002"
down_revision: str | None = "recommend_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(sa.schema.CreateSequence(sa.Sequence("catalog_seq")))
    op.execute(sa.schema.CreateSequence(sa.Sequence("model_version_seq")))
    op.create_table(
        "products",
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("price", sa.Numeric(18, 4)),
        sa.Column("currency", sa.String(3)),
        sa.Column("active", sa.Boolean, nullable=False, server_default="true"),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default=sa.text("nextval('catalog_seq')")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_products_seq", "products", ["seq"])
    op.create_table(
        "interactions",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(80), nullable=False),
    )
    op.create_table(
        "customer_products",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("purchases", sa.Integer, nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "product_id"),
    )
    op.create_table(
        "preferences",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("categories", postgresql.ARRAY(sa.String(100)), nullable=False),
        sa.Column("excluded_categories", postgresql.ARRAY(sa.String(100)), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    for table in ("preferences", "customer_products", "interactions", "products"):
        op.drop_table(table)
    op.execute("DROP SEQUENCE model_version_seq")
    op.execute("DROP SEQUENCE catalog_seq")
