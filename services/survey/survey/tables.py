"""The survey service's tables, all in its own `survey` schema."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from kit.experiments import add_experiment_tables
from kit.tables import add_kit_tables

metadata = MetaData()
add_kit_tables(metadata)
add_experiment_tables(metadata)

surveys = Table(
    "surveys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("questions", JSONB, nullable=False),
    Column("reward_points", BigInteger),
    Column("cooldown_days", Integer, nullable=False),
    Column("send_after_purchase", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_surveys_created", "created_at", "id"),
    Index("ix_surveys_after_purchase", "created_at", postgresql_where=text("send_after_purchase")),
)

# When each customer was last invited, to any survey: the throttle is one conditional upsert on this row.
contacts = Table(
    "contacts",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("last_invited_at", DateTime(timezone=True), nullable=False),
)

# Opt-outs and hard bounces: nobody on this list is invited again.
# An entry names a customer, an address (compared without case; imported opt-outs may carry only one), or both.
suppressions = Table(
    "suppressions",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("customer_id", String(64)),
    Column("email", String(254)),
    Column("reason", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("reason IN ('opt_out', 'hard_bounce')", name="ck_suppressions_reason"),
    CheckConstraint("customer_id IS NOT NULL OR email IS NOT NULL", name="ck_suppressions_someone"),
    Index("uq_suppressions_customer", "customer_id", unique=True, postgresql_where=text("customer_id IS NOT NULL")),
    Index("ix_suppressions_email", func.lower(text("email"))),
)

invitations = Table(
    "invitations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("survey_id", UUID(as_uuid=True), ForeignKey("surveys.id"), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("email", String(254), nullable=False),
    # sha256 of the link's token; the token itself is never stored here
    Column("token_hash", LargeBinary(32), nullable=False),
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("source", String(16), nullable=False, server_default="api"),
    Column("caller", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("send_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("used_at", DateTime(timezone=True)),
    # in the holdout of an experiment on the survey's reward: its email and page promise nothing, and none is given
    Column("reward_withheld", Boolean, nullable=False, server_default=text("false")),
    # the purchase a post-purchase invitation asks about (its rating is feedback on those products)
    Column("purchase_id", String(64)),
    CheckConstraint("status IN ('queued', 'sent', 'failed', 'cancelled')", name="ck_invitations_status"),
    Index("ix_invitations_token_hash", "token_hash", unique=True),
    Index("ix_invitations_survey_created", "survey_id", "created_at"),
    Index("ix_invitations_customer", "customer_id"),
)

# The mail outbox: one rendered message per invitation, written in the invitation's transaction. The message
# holds the personal link (the raw token), so it is dropped once the SMTP server has accepted it.
mail_outbox = Table(
    "mail_outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("invitation_id", UUID(as_uuid=True), ForeignKey("invitations.id"), nullable=False),
    Column("recipient", String(254), nullable=False),
    Column("message", LargeBinary),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("sent_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('pending', 'sent', 'failed', 'cancelled')", name="ck_mail_outbox_status"),
    Index("ix_mail_outbox_invitation", "invitation_id", unique=True),
    Index("ix_mail_outbox_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
)

responses = Table(
    "responses",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("invitation_id", UUID(as_uuid=True), ForeignKey("invitations.id"), nullable=False),
    Column("survey_id", UUID(as_uuid=True), ForeignKey("surveys.id"), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("answers", JSONB, nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_responses_invitation", "invitation_id", unique=True),
    Index("ix_responses_survey_submitted", "survey_id", "submitted_at"),
)

# One row per answered NPS or rating question, so results are plain aggregates.
response_scores = Table(
    "response_scores",
    metadata,
    Column("response_id", UUID(as_uuid=True), ForeignKey("responses.id"), nullable=False),
    Column("question_id", String(64), nullable=False),
    Column("survey_id", UUID(as_uuid=True), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("score", SmallInteger, nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("response_id", "question_id"),
    CheckConstraint("kind IN ('nps', 'rating')", name="ck_response_scores_kind"),
    Index("ix_response_scores_survey", "survey_id", "kind", "submitted_at"),
)

# Invitations counted per caller and UTC day, for the send quota.
send_quota_usage = Table(
    "send_quota_usage",
    metadata,
    Column("caller", String(128), nullable=False),
    Column("day", Date, nullable=False),
    Column("sent", Integer, nullable=False),
    PrimaryKeyConstraint("caller", "day"),
)
