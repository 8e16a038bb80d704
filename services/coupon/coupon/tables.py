"""The coupon service's tables, all in its own `coupon` schema.

`codes` is written by COPY in batches of up to 100,000 rows, so it has as few B-tree entries per row as
its reads allow: the unique code; a BRIN summary of (campaign, seq) for reads by campaign; the customer's
wallet index, partial, which has no entry at COPY time. No foreign key either (a per-row trigger would cost
more than the COPY itself).
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from kit.experiments import add_experiment_tables
from kit.tables import add_kit_tables

metadata = MetaData()
add_kit_tables(metadata)
add_experiment_tables(metadata)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("discount_type", String(16), nullable=False),
    Column("discount_value", Numeric, nullable=False),
    Column("currency", String(3)),
    Column("max_discount", Numeric),
    Column("code_prefix", String(16), nullable=False, server_default=""),
    Column("code_length", SmallInteger, nullable=False),
    Column("charset", String(16), nullable=False),
    Column("per_code_limit", Integer, nullable=False),
    Column("per_customer_limit", Integer, nullable=False),
    Column("total_limit", Integer),
    # standing redemptions, kept only when total_limit is set (it is the row that carries that limit)
    Column("uses", Integer, nullable=False, server_default="0"),
    Column("min_order_total", Numeric),
    Column("categories", ARRAY(Text), nullable=False, server_default="{}"),
    Column("valid_from", DateTime(timezone=True)),
    Column("valid_until", DateTime(timezone=True)),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("generated", BigInteger, nullable=False, server_default="0"),
    Column("issued", BigInteger, nullable=False, server_default="0"),
    # codes promised (jobs reserve their sequence range up front); the guessability rule counts these
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    # codes imported from another programme (outside every generated format): see FormatCache
    Column("imported", BigInteger, nullable=False, server_default="0"),
    Column("issue_cursor", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_campaigns_format", "code_prefix", "code_length", "charset"),
)

codes = Table(
    "codes",
    metadata,
    # "C" collation: byte comparison; the database default (e.g. C.UTF-8 through libc) costs about twice as
    # much per comparison, and every COPY'd row does ~20 of them in the unique index
    Column("code", String(64, collation="C"), primary_key=True),
    Column("campaign_id", UUID(as_uuid=True), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("customer_id", String(64)),
    Column("uses", Integer, nullable=False, server_default="0"),
    Column("issued_at", DateTime(timezone=True)),
    # an imported code's spelling when it differs from the normalised `code` that lookups match
    Column("spelling", String(64)),
    # BRIN, not a B-tree: a second B-tree costs a COPY about as much as the unique index itself, while a BRIN
    # summary of (campaign, seq) per 32 pages is nearly free to keep. Codes are written in seq order per
    # campaign, so a window `campaign_id = X AND seq BETWEEN a AND b` finds its few pages; every read by
    # campaign is such a window (export, pages, issuance). New pages are summarised at the end of each job.
    Index(
        "ix_codes_campaign_seq",
        "campaign_id",
        "seq",
        postgresql_using="brin",
        postgresql_with={"pages_per_range": "32", "autosummarize": "on"},
    ),
    Index(
        "ix_codes_customer",
        "customer_id",
        "issued_at",
        "code",
        postgresql_where=text("customer_id IS NOT NULL"),
    ),
)

code_jobs = Table(
    "code_jobs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("campaign_id", UUID(as_uuid=True), ForeignKey("campaigns.id"), nullable=False),
    Column("requested", Integer, nullable=False),
    Column("generated", Integer, nullable=False, server_default="0"),
    Column("seq_start", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    # due for a worker (kit.leases): at once when queued, one lease after each stored batch while it runs
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_code_jobs_campaign", "campaign_id", "created_at"),
    Index("ix_code_jobs_unfinished", "created_at", postgresql_where=text("status IN ('pending', 'running')")),
)

redemptions = Table(
    "redemptions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("code", String(64), nullable=False),
    Column("campaign_id", UUID(as_uuid=True), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("order_total", Numeric, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("discount_amount", Numeric, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("rolled_back_at", DateTime(timezone=True)),
    UniqueConstraint("code", "order_id", name="uq_redemptions_code_order"),
    Index("ix_redemptions_campaign", "campaign_id"),
)

customer_uses = Table(
    "customer_uses",
    metadata,
    Column("campaign_id", UUID(as_uuid=True), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("uses", Integer, nullable=False),
    PrimaryKeyConstraint("campaign_id", "customer_id"),
)

coupon_rules = Table(
    "coupon_rules",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    # a rule grants a coupon of a campaign, or (a gift) a catalogue item of the points service: exactly one
    Column("campaign_id", UUID(as_uuid=True), ForeignKey("campaigns.id")),
    Column("reward_id", UUID(as_uuid=True)),
    Column("trigger_type", String(32), nullable=False),
    Column("n", Integer),
    Column("amount", Numeric),
    Column("currency", String(3)),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_coupon_rules_trigger", "trigger_type", postgresql_where=text("active")),
    CheckConstraint("(campaign_id IS NULL) <> (reward_id IS NULL)", name="ck_coupon_rules_grants_one"),
)

rule_firings = Table(
    "rule_firings",
    metadata,
    Column("rule_id", UUID(as_uuid=True), nullable=False),
    Column("event_key", String(128), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("code", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("rule_id", "event_key"),
)

purchases_seen = Table(
    "purchases_seen",
    metadata,
    Column("purchase_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

customer_purchase_counts = Table(
    "customer_purchase_counts",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("purchases", Integer, nullable=False),
)

# Coupon rewards (migration coupon_reward_issuance): one row per issuance key, the points service's redemption
# id. `issued` with its code, `voided` (asked to void before any issue), `refused` (the campaign could not issue).
reward_issuances = Table(
    "reward_issuances",
    metadata,
    Column("key", UUID(as_uuid=True), primary_key=True),
    Column("status", String(8), nullable=False),
    Column("campaign_id", UUID(as_uuid=True)),
    Column("customer_id", String(64)),
    Column("code", String(64)),
    Column("reason", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('issued', 'voided', 'refused')", name="ck_reward_issuances_status"),
)
