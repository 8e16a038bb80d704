"""Experiment outcomes: each exposed customer's purchases after their exposure, rolled up by day, kept by
PostgreSQL itself whoever writes the purchases or the exposures (docs/experiments.md, "Why a rollup").

`experiment_outcomes` has one row per (experiment, customer, day) with the number and total of the customer's
purchases made in that day after the exposure: day d holds the purchases with d - 1 < (occurred_at - exposed_at)
in days <= d, so a purchase is within a window of W days exactly when its day is <= W. The results are then one
aggregate over the rows with day <= W, instead of one index probe into the purchases per exposed customer.

Kept by statement-level triggers (set-based, so a bulk import or a COPY costs one join, not one call per row):
- purchases inserted: added to the days of every exposure of their customer made before them (an upsert that
  adds, so two transactions adding purchases of one customer never wait on each other);
- purchases deleted, exposures inserted, moved (an earlier trigger arrives later) or deleted: the outcomes of the
  exposures concerned are computed again from the purchases.
A purchase and an exposure of the same customer written at the same moment in two transactions would each miss
the other (neither sees the other's uncommitted row): both sides take a transaction advisory lock on the
customer's bucket (one of 16) first, shared when adding purchases, exclusive when recomputing, and PostgreSQL
gives each later statement a snapshot taken after the lock, so whichever commits second sees the first.

Revision ID: gateway_experiment_outcomes
Revises: gateway_console_sessions
Create Date: 2026-12-03
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "gateway_experiment_outcomes"
down_revision: str | None = "gateway_console_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the day of a purchase after an exposure: ceil of the gap in days (of 24 hours), at least 1
DAY = "ceil(extract(epoch FROM (p.occurred_at - x.exposed_at)) / 86400)::integer"
# the longest window the results accept (`window_days` <= 365 days of 24 hours): later purchases are never
# counted, so not kept
WITHIN = "p.occurred_at > x.exposed_at AND p.occurred_at <= x.exposed_at + interval '8760 hours'"
# 0x45585054 = 'EXPT': the advisory lock class of the outcomes; the second key is the customer's bucket
LOCKS = """
    PERFORM pg_advisory_xact_lock{shared}(1163415636, b)
       FROM (SELECT DISTINCT hashtext(customer_id) & 15 AS b FROM {rows} ORDER BY b) AS buckets;
"""

# the outcomes of every exposure of the customers in {rows}, computed again from the purchases
RECOMPUTE = f"""
    DELETE FROM experiment_outcomes AS o USING (SELECT DISTINCT customer_id FROM {{rows}}) AS c
     WHERE o.customer_id = c.customer_id;
    INSERT INTO experiment_outcomes (experiment_id, arm, customer_id, day, purchases, revenue)
    SELECT x.experiment_id, x.arm, x.customer_id, {DAY}, count(*), coalesce(sum(p.total), 0)
      FROM experiment_exposures AS x
      JOIN purchases AS p ON p.customer_id = x.customer_id AND {WITHIN}
     WHERE x.customer_id IN (SELECT customer_id FROM {{rows}})
     GROUP BY 1, 2, 3, 4;
"""

FUNCTIONS = f"""
CREATE FUNCTION experiment_outcomes_on_exposures_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    {LOCKS.format(shared="", rows="changed")}
    {RECOMPUTE.format(rows="changed")}
    RETURN NULL;
END $$;

CREATE FUNCTION experiment_outcomes_on_exposures_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    {LOCKS.format(shared="", rows="gone")}
    {RECOMPUTE.format(rows="gone")}
    RETURN NULL;
END $$;

CREATE FUNCTION experiment_outcomes_on_purchases_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    {LOCKS.format(shared="", rows="gone")}
    {RECOMPUTE.format(rows="gone")}
    RETURN NULL;
END $$;

CREATE FUNCTION experiment_outcomes_on_purchases_added() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    {LOCKS.format(shared="_shared", rows="added")}
    INSERT INTO experiment_outcomes AS o (experiment_id, arm, customer_id, day, purchases, revenue)
    SELECT x.experiment_id, x.arm, x.customer_id, {DAY}, count(*), coalesce(sum(p.total), 0)
      FROM added AS p
      JOIN experiment_exposures AS x ON x.customer_id = p.customer_id AND {WITHIN}
     GROUP BY 1, 2, 3, 4
    ON CONFLICT (experiment_id, arm, customer_id, day) DO UPDATE
       SET purchases = o.purchases + excluded.purchases, revenue = o.revenue + excluded.revenue;
    RETURN NULL;
END $$;

CREATE TRIGGER experiment_outcomes_exposed AFTER INSERT ON experiment_exposures
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION experiment_outcomes_on_exposures_changed();
CREATE TRIGGER experiment_outcomes_moved AFTER UPDATE ON experiment_exposures
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION experiment_outcomes_on_exposures_changed();
CREATE TRIGGER experiment_outcomes_unexposed AFTER DELETE ON experiment_exposures
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION experiment_outcomes_on_exposures_deleted();
CREATE TRIGGER experiment_outcomes_purchased AFTER INSERT ON purchases
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION experiment_outcomes_on_purchases_added();
CREATE TRIGGER experiment_outcomes_unpurchased AFTER DELETE ON purchases
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION experiment_outcomes_on_purchases_deleted();
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "experiment_outcomes",
        sa.Column("experiment_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("arm", sa.String(9), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("purchases", sa.Integer, nullable=False),
        sa.Column("revenue", sa.Numeric, nullable=False),
        # ordered as the results read it (by arm, then customer), carrying the sums: an index-only scan
        sa.PrimaryKeyConstraint(
            "experiment_id", "arm", "customer_id", "day", postgresql_include=["purchases", "revenue"]
        ),
    )
    op.create_index("ix_experiment_outcomes_customer", "experiment_outcomes", ["customer_id"])
    op.create_index("ix_experiment_exposures_customer", "experiment_exposures", ["customer_id"])
    op.create_index("ix_experiment_exposures_arm", "experiment_exposures", ["experiment_id", "arm"])
    # one statement per call (asyncpg prepares each): split where a CREATE starts a line
    for statement in re.split(r"\n(?=CREATE )", FUNCTIONS.strip()):
        op.execute(statement)
    # what was there before the triggers
    op.execute(
        f"""
        INSERT INTO experiment_outcomes (experiment_id, arm, customer_id, day, purchases, revenue)
        SELECT x.experiment_id, x.arm, x.customer_id, {DAY}, count(*), coalesce(sum(p.total), 0)
          FROM experiment_exposures AS x
          JOIN purchases AS p ON p.customer_id = x.customer_id AND {WITHIN}
         GROUP BY 1, 2, 3, 4
        """
    )


def downgrade() -> None:
    for trigger, table in (
        ("experiment_outcomes_exposed", "experiment_exposures"),
        ("experiment_outcomes_moved", "experiment_exposures"),
        ("experiment_outcomes_unexposed", "experiment_exposures"),
        ("experiment_outcomes_purchased", "purchases"),
        ("experiment_outcomes_unpurchased", "purchases"),
    ):
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
    for function in (
        "experiment_outcomes_on_purchases_added()",
        "experiment_outcomes_on_purchases_deleted()",
        "experiment_outcomes_on_exposures_changed()",
        "experiment_outcomes_on_exposures_deleted()",
    ):
        op.execute(f"DROP FUNCTION {function}")
    op.drop_index("ix_experiment_exposures_arm", table_name="experiment_exposures")
    op.drop_index("ix_experiment_exposures_customer", table_name="experiment_exposures")
    op.drop_table("experiment_outcomes")
