"""SQL of the coupon service. Hot paths (redemption, validation) are hand-written statements; bulk codes
go through COPY on the raw asyncpg connection."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.codes import CodeFormat, as_strings, copy_rows, generate_bodies
from kit.db import request_driver_connection

__all__ = [
    "store_codes",
]


_INSERT_SKIPPING_DUPLICATES = """
INSERT INTO codes (code, campaign_id, seq)
SELECT c, $2, s FROM unnest($1::text[], $3::bigint[]) AS t(c, s)
ON CONFLICT (code) DO NOTHING
RETURNING seq
"""


async def store_codes(
    connection: asyncpg.Connection, campaign_id: uuid.UUID, fmt: CodeFormat, seq_start: int, count: int
) -> None:
    """Generate and store `count` codes with sequence numbers `seq_start ...`.

    COPY is all-or-nothing, so a collision with an existing code (about `count * live / space`: rare, as the
    guessability rule keeps each campaign below 2^-34 of its space) rolls back to a savepoint and the batch goes in with
    `ON CONFLICT DO NOTHING`; the codes that collided are drawn again, keeping their sequence numbers.
    """
    await store_batch(connection, campaign_id, fmt, generate_bodies(fmt, count), seq_start)


async def store_batch(
    connection: asyncpg.Connection,
    campaign_id: uuid.UUID,
    fmt: CodeFormat,
    bodies: npt.NDArray[np.uint8],
    seq_start: int,
) -> None:
    await connection.execute("SAVEPOINT coupon_codes_copy")
    try:
        await connection.copy_to_table(
            "codes",
            source=memoryview(copy_rows(bodies, campaign_id, seq_start)),  # bytes would be taken for a path
            columns=["code", "campaign_id", "seq"],
            format="binary",
        )
    except asyncpg.UniqueViolationError:
        await connection.execute("ROLLBACK TO SAVEPOINT coupon_codes_copy")
        await _insert_with_retries(connection, campaign_id, fmt, as_strings(bodies), seq_start)
    else:
        await connection.execute("RELEASE SAVEPOINT coupon_codes_copy")


async def _insert_with_retries(
    connection: asyncpg.Connection, campaign_id: uuid.UUID, fmt: CodeFormat, codes: list[str], seq_start: int
) -> None:
    pending = dict(zip(range(seq_start, seq_start + len(codes)), codes, strict=True))
    while pending:
        seqs = list(pending)
        inserted = await connection.fetch(_INSERT_SKIPPING_DUPLICATES, [pending[s] for s in seqs], campaign_id, seqs)
        for record in inserted:
            del pending[record["seq"]]
        if pending:
            fresh = as_strings(generate_bodies(fmt, len(pending)))
            pending = dict(zip(pending, fresh, strict=True))


async def insert_one_code(session: AsyncSession, campaign_id: uuid.UUID, fmt: CodeFormat, seq: int) -> str:
    connection = await request_driver_connection(session)
    while True:
        code = as_strings(generate_bodies(fmt, 1))[0]
        inserted = await connection.fetch(_INSERT_SKIPPING_DUPLICATES, [code], campaign_id, [seq])
        if inserted:
            return code


async def fetch_one(session: AsyncSession, sql: str, **params: Any) -> Row[Any] | None:
    return (await session.execute(text(sql), params)).first()


async def fetch_all(session: AsyncSession, sql: str, **params: Any) -> Sequence[Row[Any]]:
    return (await session.execute(text(sql), params)).all()


async def execute(session: AsyncSession, sql: str, **params: Any) -> int:
    result = await session.execute(text(sql), params)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


CAMPAIGN_COLUMNS = """
    k.id, k.name, k.discount_type, k.discount_value, k.currency, k.max_discount, k.code_prefix, k.code_length,
    k.charset, k.per_code_limit, k.per_customer_limit, k.total_limit, k.uses, k.min_order_total, k.categories,
    k.valid_from, k.valid_until, k.active, k.generated, k.issued, k.reserved, k.issue_cursor, k.created_at,
    k.updated_at
"""

SELECT_CAMPAIGN = f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns k WHERE k.id = :id"

REDEMPTION_STATS = """
SELECT campaign_id,
       count(*) FILTER (WHERE rolled_back_at IS NULL) AS redeemed,
       count(*) FILTER (WHERE rolled_back_at IS NOT NULL) AS rolled_back
  FROM redemptions WHERE campaign_id = ANY(:ids) GROUP BY campaign_id
"""

LATEST_JOBS = """
SELECT DISTINCT ON (campaign_id) id, campaign_id, status, requested, generated, created_at, started_at,
       finished_at, error
  FROM code_jobs WHERE campaign_id = ANY(:ids) ORDER BY campaign_id, created_at DESC
"""

JOB_COLUMNS = "id, campaign_id, status, requested, generated, created_at, started_at, finished_at, error"

CAMPAIGN_COLUMNS_RAW = CAMPAIGN_COLUMNS

# Locks the code row (the row that carries the per-code limit); the campaign is read, not locked.
LOCK_CODE = f"""
SELECT c.code, c.customer_id AS assigned_to, c.uses AS code_uses, now() AS now, {CAMPAIGN_COLUMNS}
  FROM codes c JOIN campaigns k ON k.id = c.campaign_id
 WHERE c.code = $1
   FOR UPDATE OF c
"""

READ_CODE = f"""
SELECT c.code, c.customer_id AS assigned_to, c.uses AS code_uses, now() AS now, {CAMPAIGN_COLUMNS},
       (SELECT uses FROM customer_uses u WHERE u.campaign_id = k.id AND u.customer_id = $2) AS customer_uses
  FROM codes c JOIN campaigns k ON k.id = c.campaign_id
 WHERE c.code = $1
"""

REDEMPTION_COLUMNS = """
id, code, campaign_id, customer_id, order_id, currency, discount_amount, created_at, rolled_back_at
"""

# Everything after the code row is locked, in one statement (a new snapshot, so a concurrent redemption
# with this order id that committed while we waited for the lock is seen):
# - a prior redemption of this code for this order id answers the repeat and takes nothing;
# - the customer's use is a conditional upsert on customer_uses (the row that carries that limit);
# - the campaign's use, only for campaigns with a total limit, a conditional UPDATE of the campaign row;
# - then the code's use and the redemption.
# Each step runs only if the one before it succeeded (the EXISTS references also fix the order in which the
# rows are locked: code, customer, campaign). $6 is false when the caller already found a refusal.
REDEEM = f"""
WITH prior AS (
    SELECT false AS is_new, {REDEMPTION_COLUMNS} FROM redemptions WHERE code = $1 AND order_id = $2
), customer AS (
    INSERT INTO customer_uses AS u (campaign_id, customer_id, uses)
    SELECT $3, $4, 1 WHERE $6 AND NOT EXISTS (SELECT 1 FROM prior)
    ON CONFLICT (campaign_id, customer_id) DO UPDATE SET uses = u.uses + 1 WHERE u.uses < $5
    RETURNING uses
), campaign AS (
    UPDATE campaigns SET uses = uses + 1
     WHERE id = $3 AND $7 AND uses < total_limit AND EXISTS (SELECT 1 FROM customer)
    RETURNING uses
), code AS (
    UPDATE codes SET uses = uses + 1
     WHERE code = $1 AND EXISTS (SELECT 1 FROM customer) AND (NOT $7 OR EXISTS (SELECT 1 FROM campaign))
    RETURNING uses
), created AS (
    INSERT INTO redemptions (id, code, campaign_id, customer_id, order_id, order_total, currency, discount_amount)
    SELECT $8, $1, $3, $4, $2, $9, $10, $11 WHERE EXISTS (SELECT 1 FROM code)
    RETURNING true AS is_new, {REDEMPTION_COLUMNS}
)
SELECT r.*, EXISTS (SELECT 1 FROM customer) AS customer_taken, EXISTS (SELECT 1 FROM campaign) AS campaign_taken
  FROM (SELECT 1) AS one
  LEFT JOIN (SELECT * FROM prior UNION ALL SELECT * FROM created) AS r ON true
"""

ROLL_BACK = f"""
UPDATE redemptions SET rolled_back_at = now() WHERE id = :id AND rolled_back_at IS NULL
RETURNING {REDEMPTION_COLUMNS}
"""

# Given back one statement at a time, in the order a redemption takes them (code, customer, campaign),
# so a rollback and a redemption never wait on each other in a cycle.
GIVE_BACK = (
    "UPDATE codes SET uses = uses - 1 WHERE code = :code",
    "UPDATE customer_uses SET uses = uses - 1 WHERE campaign_id = :campaign_id AND customer_id = :customer_id",
    "UPDATE campaigns SET uses = uses - 1 WHERE id = :campaign_id AND total_limit IS NOT NULL",
)


# --- imported codes -------------------------------------------------------------------------------------------


async def lock_campaign(session: AsyncSession, campaign_id: uuid.UUID) -> Row[Any] | None:
    return (
        await session.execute(
            text("SELECT id, per_code_limit, total_limit, reserved FROM campaigns WHERE id = :id FOR UPDATE"),
            {"id": campaign_id},
        )
    ).first()


@dataclass(frozen=True)
class ImportedCode:
    code: str  # normalised
    spelling: str | None  # as printed, when it differs
    customer_id: str | None
    uses: int


# One statement for every code of a call (the campaign row is locked by the caller, so its `reserved` read then
# is the start of the codes' sequence range): the codes go in, a code that exists already stays out; uses the
# old programme recorded count toward the limits as a redemption's do (the customer's, on `customer_uses`,
# in customer order; the campaign's total, on the campaign row when it has one); the campaign counts them.
# Answers, for each code not stored, where it is: `here` (this campaign), `elsewhere`, or NULL (in this
# statement's snapshot: another import stored it meanwhile).
_INSERT_IMPORTED = """
    WITH line AS (
        SELECT * FROM unnest(string_to_array($2, ','), string_to_array($3, ',', ''),
                             string_to_array($4, ',')::integer[], string_to_array($5, ',', ''))
                      WITH ORDINALITY AS u(code, customer, uses, spelling, ord)
    ), stored AS (
        INSERT INTO codes (code, campaign_id, seq, customer_id, uses, issued_at, spelling)
        SELECT code, $1, $6 + ord, customer, uses, CASE WHEN customer IS NULL THEN NULL ELSE now() END, spelling
          FROM line
        ON CONFLICT (code) DO NOTHING
        RETURNING code, customer_id, uses
    ), customer AS (
        INSERT INTO customer_uses AS u (campaign_id, customer_id, uses)
        SELECT $1, customer_id, sum(uses) FROM stored
         WHERE customer_id IS NOT NULL AND uses > 0 GROUP BY customer_id ORDER BY customer_id
        ON CONFLICT (campaign_id, customer_id) DO UPDATE SET uses = u.uses + excluded.uses
    ), campaign AS (
        UPDATE campaigns k
           SET reserved = k.reserved + $7, generated = k.generated + s.stored, imported = k.imported + s.stored,
               issued = k.issued + s.assigned,
               uses = k.uses + CASE WHEN k.total_limit IS NULL THEN 0 ELSE s.uses END
          FROM (SELECT count(*) AS stored, count(customer_id) AS assigned, coalesce(sum(uses), 0) AS uses
                  FROM stored) s
         WHERE k.id = $1
    )
    SELECT l.ord, CASE WHEN c.campaign_id = $1 THEN 'here' WHEN c.campaign_id IS NOT NULL THEN 'elsewhere' END
      FROM line l LEFT JOIN codes c ON c.code = l.code
     WHERE NOT EXISTS (SELECT 1 FROM stored s WHERE s.code = l.code)
"""


async def insert_imported_codes(
    session: AsyncSession, campaign: Row[Any], codes: Sequence[ImportedCode]
) -> dict[int, str | None]:
    """Store the codes in the campaign (locked by the caller) and count them in its figures and its customers'
    uses; answers the codes (by index) not stored, with where each is: `here`, `elsewhere` or None (stored
    meanwhile by another import)."""
    connection = await request_driver_connection(session)
    # Each column goes as one text, split by the database: asyncpg checks every element of an array parameter
    # against collections.abc (a Python-level isinstance), which cost more than the rest of the encoding. Codes,
    # spellings and customer ids hold no comma (their patterns); an empty cell is NULL.
    rows = await connection.fetch(
        _INSERT_IMPORTED,
        campaign.id,
        ",".join([c.code for c in codes]),
        ",".join([c.customer_id or "" for c in codes]),
        ",".join([str(c.uses) for c in codes]),
        ",".join([c.spelling or "" for c in codes]),
        campaign.reserved,
        len(codes),
    )
    return {row[0] - 1: row[1] for row in rows}
