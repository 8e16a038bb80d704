"""Surveys, invitations, the mail outbox, responses and their scores, suppressions, throttle and quota state.

Revision ID: survey_0002
Revises: survey_0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "survey_0002"
down_revision: str | None = "survey_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "surveys",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("questions", JSONB, nullable=False),
        sa.Column("reward_points", sa.BigInteger),
        sa.Column("cooldown_days", sa.Integer, nullable=False),
        sa.Column("send_after_purchase", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    )
    op.create_index("ix_surveys_created", "surveys", ["created_at", "id"])
    op.create_index(
        "ix_surveys_after_purchase", "surveys", ["created_at"], postgresql_where=sa.text("send_after_purchase")
    )
    op.create_table(
        "contacts",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("last_invited_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "suppressions",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(254)),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.CheckConstraint("reason IN ('opt_out', 'hard_bounce')", name="ck_suppressions_reason"),
    )
    op.create_index("ix_suppressions_email", "suppressions", ["email"])
    op.create_table(
        "invitations",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("survey_id", UUID(as_uuid=True), sa.ForeignKey("surveys.id"), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("source", sa.String(16), nullable=False, server_default="api"),
        sa.Column("caller", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('queued', 'sent', 'failed', 'cancelled')", name="ck_invitations_status"),
    )
    op.create_index("ix_invitations_token_hash", "invitations", ["token_hash"], unique=True)
    op.create_index("ix_invitations_survey_created", "invitations", ["survey_id", "created_at"])
    op.create_index("ix_invitations_customer", "invitations", ["customer_id"])
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("invitation_id", UUID(as_uuid=True), sa.ForeignKey("invitations.id"), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("message", sa.LargeBinary),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'cancelled')", name="ck_mail_outbox_status"),
    )
    op.create_index("ix_mail_outbox_invitation", "mail_outbox", ["invitation_id"], unique=True)
    op.create_index(
        "ix_mail_outbox_due", "mail_outbox", ["next_attempt_at"], postgresql_where=sa.text("status = 'pending'")
    )
    op.create_table(
        "responses",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("invitation_id", UUID(as_uuid=True), sa.ForeignKey("invitations.id"), nullable=False),
        sa.Column("survey_id", UUID(as_uuid=True), sa.ForeignKey("surveys.id"), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("answers", JSONB, nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    )
    op.create_index("ix_responses_invitation", "responses", ["invitation_id"], unique=True)
    op.create_index("ix_responses_survey_submitted", "responses", ["survey_id", "submitted_at"])
    op.create_table(
        "response_scores",
        sa.Column("response_id", UUID(as_uuid=True), sa.ForeignKey("responses.id"), nullable=False),
        sa.Column("question_id", sa.String(64), nullable=False),
        sa.Column("survey_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("score", sa.SmallInteger, nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("response_id", "question_id"),
        sa.CheckConstraint("kind IN ('nps', 'rating')", name="ck_response_scores_kind"),
    )
    op.create_index("ix_response_scores_survey", "response_scores", ["survey_id", "kind", "submitted_at"])
    op.create_table(
        "send_quota_usage",
        sa.Column("caller", sa.String(128), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("sent", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("caller", "day"),
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for table in (
        "send_quota_usage",
        "response_scores",
        "responses",
        "mail_outbox",
        "invitations",
        "suppressions",
        "contacts",
        "surveys",
    ):
        op.drop_table(table)
