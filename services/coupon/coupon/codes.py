"""Codes of a campaign: bulk generation (in the request for small counts, else a background job), the
guessability rule that bounds how many one campaign may hold, and reading them back (pages, CSV export)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coupon.campaigns import campaign_row
from coupon.code_format import CodeFormat, generate_bodies
from coupon.repositories import campaigns as campaign_rows
from coupon.repositories import codes as code_rows
from coupon.repositories import jobs as job_rows
from coupon.repositories.campaigns import CampaignRow
from coupon.repositories.codes import CodeRow
from coupon.runtime import CouponRuntime
from coupon.schemas import CodeJob, CodesRequest, CouponCode
from kit.errors import NotFound, Unprocessable
from kit.pagination import Page, PageParams, encode_cursor

log = structlog.get_logger("coupon.codes")

CSV_BATCH = 10_000


def _guessability_guard(runtime: CouponRuntime, fmt: CodeFormat, live: int, count: int) -> None:
    bits = runtime.min_guess_bits
    max_codes = fmt.space >> bits
    if live + count > max_codes:
        raise Unprocessable(
            f"Too many codes for this campaign: its code space must hold at least 2^{bits} possible codes for "
            f"each of its codes, so {fmt.charset} codes of length {fmt.length} (check character included) allow "
            f"at most {max_codes:,} codes in one campaign; it has {live:,}. Use a longer code or a larger charset.",
            code="codes_guessable",
            code_space=str(fmt.space),  # may exceed 64 bits: a decimal string
            code_space_bits=round(fmt.space_bits, 1),
            live_codes=live,
            requested=count,
            max_codes=max_codes,
            rule=f"code_space / campaign_codes >= 2^{bits}",
        )


async def reserve_codes(session: AsyncSession, runtime: CouponRuntime, campaign: CampaignRow, count: int) -> int:
    """Check the guessability rule for `count` more codes of this campaign and reserve their sequence numbers;
    answers the first.

    The rule is per campaign: a guess that hits a code of one campaign is what the rule bounds, and one shop's
    campaigns never use up another's room (the caller holds the campaign row locked, so two requests of one
    campaign take turns)."""
    _guessability_guard(runtime, campaign.format, campaign.reserved, count)
    return await campaign_rows.reserve(session, campaign.id, count)


async def request_codes(
    session: AsyncSession, runtime: CouponRuntime, campaign_id: uuid.UUID, body: CodesRequest
) -> tuple[CodeJob, bool]:
    """Small counts are stored in this transaction (the job comes back `succeeded`); larger ones become a
    `pending` job that a background worker runs in batches. Returns the job and whether it finished."""
    campaign = await campaign_row(session, campaign_id, lock=True)
    seq_start = await reserve_codes(session, runtime, campaign, body.count)
    done = body.count <= runtime.sync_codes_max
    if done:
        bodies = generate_bodies(campaign.format, body.count)
        await code_rows.store_batch(session, campaign_id, campaign.format, bodies, seq_start)
        await campaign_rows.add_generated(session, campaign_id, body.count)
    job = await job_rows.insert(session, uuid.uuid4(), campaign_id, body.count, seq_start, done=done)
    log.info("coupon.codes.requested", campaign_id=str(campaign_id), count=body.count, job_id=str(job.id))
    return job, done


async def get_code_job(session: AsyncSession, campaign_id: uuid.UUID, job_id: uuid.UUID) -> CodeJob:
    job = await job_rows.get(session, campaign_id, job_id)
    if job is None:
        raise NotFound("No code generation job with this id for this campaign.", code="code_job_not_found")
    return job


async def list_codes(session: AsyncSession, campaign_id: uuid.UUID, page: PageParams) -> Page[CouponCode]:
    """Codes in the order they were made. Reads go by windows of sequence numbers (what the BRIN index
    answers well); sequence numbers are dense, so a window of `4 * limit` nearly always fills a page."""
    (after,) = page.after(int) or (0,)  # a forged cursor is a 422 whether or not the campaign exists
    campaign = await campaign_row(session, campaign_id)
    last = campaign.reserved
    rows: list[CodeRow] = []
    window = 4 * page.limit
    upto = after
    while len(rows) <= page.limit and upto < last:
        start, upto = upto, min(last, upto + window)
        rows += await code_rows.in_window(session, campaign_id, start, upto, page.limit + 1 - len(rows))
        window *= 4
    items = rows[: page.limit]
    cursor = encode_cursor([items[-1].seq]) if len(rows) > page.limit else None
    return Page[CouponCode](
        items=[CouponCode(code=r.code, customer_id=r.customer_id, uses=r.uses, issued_at=r.issued_at) for r in items],
        next_cursor=cursor,
    )


async def check_campaign_exists(session: AsyncSession, campaign_id: uuid.UUID) -> None:
    await campaign_row(session, campaign_id)


async def stream_codes_csv(
    sessionmaker: async_sessionmaker[AsyncSession], campaign_id: uuid.UUID
) -> AsyncIterator[bytes]:
    """Every code of the campaign as CSV, a window of 10,000 sequence numbers at a time: memory stays at
    one batch whatever the campaign's size, and no transaction stays open between batches."""
    yield b"code,customer_id,uses\n"
    async with sessionmaker() as session, session.begin():
        last = (await campaign_row(session, campaign_id)).reserved
    after = 0
    while after < last:
        async with sessionmaker() as session, session.begin():
            rows = await code_rows.in_window(session, campaign_id, after, after + CSV_BATCH, CSV_BATCH)
        after += CSV_BATCH
        if rows:
            yield "".join(f"{r.code},{r.customer_id or ''},{r.uses}\n" for r in rows).encode()
