"""Code rows: bulk storage by COPY, reads by windows of sequence numbers (what the BRIN index answers well),
assignment to customers (issuance, the wallet) and codes imported from another programme."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

import asyncpg
import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.code_format import CodeFormat, as_strings, copy_rows, generate_bodies
from coupon.repositories._rows import typed
from coupon.schemas import DiscountType
from kit.db import request_driver_connection

_INSERT_SKIPPING_DUPLICATES = """
INSERT INTO codes (code, campaign_id, seq)
SELECT c, $2, s FROM unnest($1::text[], $3::bigint[]) AS t(c, s)
ON CONFLICT (code) DO NOTHING
RETURNING seq
"""


async def store_batch(
    session: AsyncSession, campaign_id: uuid.UUID, fmt: CodeFormat, bodies: npt.NDArray[np.uint8], seq_start: int
) -> None:
    """Store generated codes with sequence numbers `seq_start ...`.

    COPY is all-or-nothing, so a collision with an existing code (about `count * live / space`: rare, as the
    guessability rule keeps each campaign below 2^-34 of its space) rolls back to a savepoint and the batch goes in
    with `ON CONFLICT DO NOTHING`; the codes that collided are drawn again, keeping their sequence numbers.
    """
    connection = await request_driver_connection(session)
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


async def insert_one(session: AsyncSession, campaign_id: uuid.UUID, fmt: CodeFormat, seq: int) -> str:
    """Make one code at sequence number `seq` (drawn again on the rare collision); answers it."""
    connection = await request_driver_connection(session)
    while True:
        code = as_strings(generate_bodies(fmt, 1))[0]
        if await connection.fetch(_INSERT_SKIPPING_DUPLICATES, [code], campaign_id, [seq]):
            return code


_STORED = "SELECT EXISTS (SELECT 1 FROM codes WHERE campaign_id = $1 AND seq = $2)"


async def present(session: AsyncSession, campaign_id: uuid.UUID, seqs: Sequence[int]) -> set[int]:
    """Which of these sequence numbers of the campaign have a code."""
    connection = await request_driver_connection(session)
    return {seq for seq in seqs if await connection.fetchval(_STORED, campaign_id, seq)}


async def summarize(session: AsyncSession) -> None:
    """Reads by campaign go through the BRIN index: summarise the new pages now rather than when autovacuum gets to
    them (until then such reads scan all of them), and give the planner statistics for the rows just added."""
    await session.execute(text("SELECT brin_summarize_new_values('ix_codes_campaign_seq')"))
    await session.execute(text("ANALYZE codes"))


@dataclass(frozen=True, slots=True)
class CodeRow:
    seq: int
    code: str
    customer_id: str | None
    uses: int
    issued_at: datetime | None


_WINDOW = """
SELECT seq, code, customer_id, uses, issued_at FROM codes
 WHERE campaign_id = $1 AND seq > $2 AND seq <= $3
 ORDER BY seq LIMIT $4
"""


async def in_window(session: AsyncSession, campaign_id: uuid.UUID, after: int, upto: int, limit: int) -> list[CodeRow]:
    """The campaign's codes with `after < seq <= upto`, in order, at most `limit`."""
    connection = await request_driver_connection(session)
    return [typed(CodeRow, r) for r in await connection.fetch(_WINDOW, campaign_id, after, upto, limit)]


@dataclass(frozen=True, slots=True)
class UnassignedCode:
    code: str
    seq: int


_UNASSIGNED = """
SELECT code, seq FROM codes
 WHERE campaign_id = $1 AND seq > $2 AND seq <= $3 AND customer_id IS NULL AND uses = 0
 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED
"""
UNASSIGNED_WINDOW = 1000


async def next_unassigned(
    session: AsyncSession, campaign_id: uuid.UUID, after: int, last: int
) -> UnassignedCode | None:
    """The first unassigned, unused code with `after < seq <= last`, locked, window by window."""
    connection = await request_driver_connection(session)
    upto = after
    while upto < last:
        start, upto = upto, min(last, upto + UNASSIGNED_WINDOW)
        taken = await connection.fetchrow(_UNASSIGNED, campaign_id, start, upto)
        if taken is not None:
            return typed(UnassignedCode, taken)
    return None


_ASSIGN = text("UPDATE codes SET customer_id = :customer, issued_at = now() WHERE code = :code")


async def assign(session: AsyncSession, code: str, customer_id: str) -> None:
    await session.execute(_ASSIGN, {"customer": customer_id, "code": code})


@dataclass(frozen=True, slots=True)
class WalletRow:
    code: str
    spelling: str
    campaign_id: uuid.UUID
    campaign_name: str
    uses: int
    issued_at: datetime
    per_code_limit: int
    valid_from: datetime | None
    valid_until: datetime | None
    discount_type: DiscountType
    discount_value: Decimal
    currency: str | None
    max_discount: Decimal | None
    status: Literal["active", "redeemed", "expired"]


_WALLET = text(
    """
    SELECT * FROM (
        SELECT c.code, coalesce(c.spelling, c.code) AS spelling, c.campaign_id, k.name AS campaign_name,
               c.uses, c.issued_at, k.per_code_limit,
               k.valid_from, k.valid_until, k.discount_type, k.discount_value, k.currency, k.max_discount,
               CASE WHEN c.uses >= k.per_code_limit THEN 'redeemed'
                    WHEN NOT k.active OR (k.valid_until IS NOT NULL AND k.valid_until <= now()) THEN 'expired'
                    ELSE 'active' END AS status
          FROM codes c JOIN campaigns k ON k.id = c.campaign_id
         WHERE c.customer_id = :customer
           AND (CAST(:after_at AS timestamptz) IS NULL OR (c.issued_at, c.code) > (:after_at, :after_code))
    ) w
    WHERE CAST(:status AS text) IS NULL OR w.status = :status
    ORDER BY w.issued_at, w.code LIMIT :limit
    """
)


async def wallet_page(
    session: AsyncSession, customer_id: str, status: str | None, after: tuple[datetime, str] | None, limit: int
) -> list[WalletRow]:
    """The customer's codes in the order they were issued, after the key `after` (issued_at, code)."""
    after_at, after_code = after or (None, None)
    params = {
        "customer": customer_id,
        "after_at": after_at,
        "after_code": after_code,
        "status": status,
        "limit": limit,
    }
    return [typed(WalletRow, row) for row in await session.execute(_WALLET, params)]


@dataclass(frozen=True, slots=True)
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


async def insert_imported(
    session: AsyncSession, campaign_id: uuid.UUID, reserved: int, codes: Sequence[ImportedCode]
) -> dict[int, str | None]:
    """Store the codes in the campaign (locked by the caller, `reserved` read under that lock) and count them in its
    figures and its customers' uses; answers the codes (by index) not stored, with where each is: `here`,
    `elsewhere` or None (stored meanwhile by another import)."""
    connection = await request_driver_connection(session)
    # Each column goes as one text, split by the database: asyncpg checks every element of an array parameter
    # against collections.abc (a Python-level isinstance), which cost more than the rest of the encoding. Codes,
    # spellings and customer ids hold no comma (their patterns); an empty cell is NULL.
    rows = await connection.fetch(
        _INSERT_IMPORTED,
        campaign_id,
        ",".join([c.code for c in codes]),
        ",".join([c.customer_id or "" for c in codes]),
        ",".join([str(c.uses) for c in codes]),
        ",".join([c.spelling or "" for c in codes]),
        reserved,
        len(codes),
    )
    return {row[0] - 1: row[1] for row in rows}
