"""The coupon domain: campaigns, bulk codes, issuance, the wallet, validation, redemption and rollback.

Limits hold under any concurrency because each is checked by a write on the row that carries it, in one
order for every transaction (code, then customer, then campaign):

- per code: the code row is locked (`SELECT ... FOR UPDATE`) before its uses are read;
- per customer: a conditional upsert on `customer_uses (campaign, customer)`;
- total: a conditional `UPDATE campaigns SET uses = uses + 1 WHERE uses < total_limit`, taken only by
  campaigns that have a total limit, so the others do not serialise on their campaign row.

A limit that is reached is a 409; nothing is written.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import structlog
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coupon import repository as repo
from coupon.codes import CodeFormat, normalize
from coupon.guards import FormatCache, GuessThrottle
from coupon.schemas import (
    Campaign,
    CampaignCreate,
    CampaignPatch,
    CampaignStats,
    CodeFormatOut,
    CodeJob,
    CodesRequest,
    CouponCode,
    DiscountOut,
    Issuance,
    IssuanceRequest,
    LimitsOut,
    Redemption,
    RedemptionRequest,
    RewardIssuance,
    RewardIssuanceRequest,
    Rule,
    RuleCreate,
    RulePatch,
    ValidationRequest,
    ValidationResult,
    WalletCoupon,
)
from coupon.settings import CouponSettings
from kit import experiments
from kit.auth import Caller
from kit.db import request_driver_connection
from kit.errors import Conflict, DomainError, FieldError, NotFound, Unprocessable, ValidationFailed
from kit.pagination import Page, PageParams, encode_cursor, paginate
from kit.types import CURRENCY_DECIMALS
from kit.webhooks import CouponIssued, CouponRedeemed, CouponRedemptionView, CouponView, publish_webhook

log = structlog.get_logger("coupon.service")

CSV_BATCH = 10_000


@dataclass
class CouponRuntime:
    """Process-wide state the domain needs besides the database."""

    settings: CouponSettings
    throttle: GuessThrottle
    formats: FormatCache
    wake_jobs: Callable[[], Awaitable[None]]


# ---------------------------------------------------------------- campaigns


def _format(row: Row[Any]) -> CodeFormat:
    return CodeFormat(row.code_prefix, row.code_length, row.charset)


def _discount(row: Row[Any]) -> DiscountOut:
    return DiscountOut(
        type=row.discount_type, value=row.discount_value, currency=row.currency, max_discount=row.max_discount
    )


def _job(row: Row[Any]) -> CodeJob:
    return CodeJob(
        id=row.id,
        campaign_id=row.campaign_id,
        status=row.status,
        requested=row.requested,
        generated=row.generated,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
    )


def _campaign(row: Row[Any], redeemed: int, rolled_back: int, job: Row[Any] | None) -> Campaign:
    return Campaign(
        id=row.id,
        name=row.name,
        discount=_discount(row),
        code=CodeFormatOut(prefix=row.code_prefix, length=row.code_length, charset=row.charset),
        limits=LimitsOut(per_code=row.per_code_limit, per_customer=row.per_customer_limit, total=row.total_limit),
        min_order_total=row.min_order_total,
        categories=list(row.categories),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        active=row.active,
        created_at=row.created_at,
        updated_at=row.updated_at,
        stats=CampaignStats(generated=row.generated, issued=row.issued, redeemed=redeemed, rolled_back=rolled_back),
        generation=_job(job) if job is not None else None,
    )


async def _with_stats(session: AsyncSession, rows: list[Row[Any]]) -> list[Campaign]:
    ids = [row.id for row in rows]
    if not ids:
        return []
    stats = {r.campaign_id: r for r in await repo.fetch_all(session, repo.REDEMPTION_STATS, ids=ids)}
    jobs = {r.campaign_id: r for r in await repo.fetch_all(session, repo.LATEST_JOBS, ids=ids)}
    out = []
    for row in rows:
        s = stats.get(row.id)
        out.append(_campaign(row, s.redeemed if s else 0, s.rolled_back if s else 0, jobs.get(row.id)))
    return out


async def _campaign_row(session: AsyncSession, campaign_id: uuid.UUID, *, lock: bool = False) -> Row[Any]:
    row = await repo.fetch_one(session, repo.SELECT_CAMPAIGN + (" FOR UPDATE" if lock else ""), id=campaign_id)
    if row is None:
        raise NotFound("No coupon campaign with this id.", code="campaign_not_found")
    return row


async def create_campaign(session: AsyncSession, runtime: CouponRuntime, body: CampaignCreate) -> Campaign:
    campaign_id = uuid.uuid4()
    fmt = CodeFormat(body.normalized_prefix, body.code.length, body.code.charset)
    row = await repo.fetch_one(
        session,
        f"""
        INSERT INTO campaigns AS k (id, name, discount_type, discount_value, currency, max_discount, code_prefix,
            code_length, charset, per_code_limit, per_customer_limit, total_limit, min_order_total, categories,
            valid_from, valid_until)
        VALUES (:id, :name, :discount_type, :discount_value, :currency, :max_discount, :code_prefix, :code_length,
            :charset, :per_code_limit, :per_customer_limit, :total_limit, :min_order_total, :categories,
            :valid_from, :valid_until)
        RETURNING {repo.CAMPAIGN_COLUMNS}
        """,
        id=campaign_id,
        name=body.name,
        discount_type=body.discount.type,
        discount_value=body.discount.value,
        currency=body.discount.currency,
        max_discount=body.discount.max_discount,
        code_prefix=fmt.prefix,
        code_length=fmt.length,
        charset=fmt.charset,
        per_code_limit=body.limits.per_code,
        per_customer_limit=body.limits.per_customer,
        total_limit=body.limits.total,
        min_order_total=body.min_order_total,
        categories=body.categories,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
    )
    assert row is not None
    runtime.formats.add(fmt)
    log.info("coupon.campaign.created", campaign_id=str(campaign_id))
    return _campaign(row, 0, 0, None)


async def get_campaign(session: AsyncSession, campaign_id: uuid.UUID) -> Campaign:
    return (await _with_stats(session, [await _campaign_row(session, campaign_id)]))[0]


async def list_campaigns(session: AsyncSession, page: PageParams, active: bool | None) -> Page[Campaign]:
    after_at, after_id = page.after(datetime, uuid.UUID) or (None, None)
    rows = await repo.fetch_all(
        session,
        f"""
        SELECT {repo.CAMPAIGN_COLUMNS} FROM campaigns k
         WHERE (CAST(:after_at AS timestamptz) IS NULL OR (k.created_at, k.id) > (:after_at, CAST(:after_id AS uuid)))
           AND (CAST(:active AS boolean) IS NULL OR k.active = :active)
         ORDER BY k.created_at, k.id LIMIT :limit
        """,
        after_at=after_at,
        after_id=after_id,
        active=active,
        limit=page.limit + 1,
    )
    items, cursor = paginate(list(rows), page.limit, key=lambda r: [r.created_at.isoformat(), str(r.id)])
    return Page[Campaign](items=await _with_stats(session, items), next_cursor=cursor)


async def update_campaign(session: AsyncSession, campaign_id: uuid.UUID, body: CampaignPatch) -> Campaign:
    row = await _campaign_row(session, campaign_id, lock=True)
    fields = body.model_dump(exclude_unset=True)
    for name in ("name", "active"):
        if name in fields and fields[name] is None:
            raise ValidationFailed([FieldError(name, "Cannot be null.")])
    until = fields.get("valid_until")
    if until is not None and row.valid_from is not None and until <= row.valid_from:
        raise ValidationFailed([FieldError("valid_until", "Must be after the campaign's valid_from.")])
    if fields:
        sets = ", ".join(f"{name} = :{name}" for name in fields)
        await repo.execute(
            session, f"UPDATE campaigns SET {sets}, updated_at = now() WHERE id = :id", id=campaign_id, **fields
        )
    return await get_campaign(session, campaign_id)


# ---------------------------------------------------------------- codes


def _guessability_guard(runtime: CouponRuntime, fmt: CodeFormat, live: int, count: int) -> None:
    bits = runtime.settings.min_guess_bits
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


async def _reserve_codes(session: AsyncSession, runtime: CouponRuntime, campaign: Row[Any], count: int) -> int:
    """Check the guessability rule for `count` more codes of this campaign and reserve their sequence numbers.

    The rule is per campaign: a guess that hits a code of one campaign is what the rule bounds, and one shop's
    campaigns never use up another's room (the caller holds the campaign row locked, so two requests of one
    campaign take turns)."""
    _guessability_guard(runtime, _format(campaign), int(campaign.reserved), count)
    reserved = await repo.fetch_one(
        session,
        "UPDATE campaigns SET reserved = reserved + :count WHERE id = :id RETURNING reserved - :count AS start",
        id=campaign.id,
        count=count,
    )
    assert reserved is not None
    return int(reserved.start) + 1


async def request_codes(
    session: AsyncSession, runtime: CouponRuntime, campaign_id: uuid.UUID, body: CodesRequest
) -> tuple[CodeJob, bool]:
    """Small counts are stored in this transaction (the job comes back `succeeded`); larger ones become a
    `pending` job that a background worker runs in batches. Returns the job and whether it finished."""
    campaign = await _campaign_row(session, campaign_id, lock=True)
    seq_start = await _reserve_codes(session, runtime, campaign, body.count)
    job_id = uuid.uuid4()
    done = body.count <= runtime.settings.sync_codes_max
    if done:
        connection = await request_driver_connection(session)
        await repo.store_codes(connection, campaign_id, _format(campaign), seq_start, body.count)
        await repo.execute(
            session, "UPDATE campaigns SET generated = generated + :n WHERE id = :id", id=campaign_id, n=body.count
        )
    row = await repo.fetch_one(
        session,
        f"""
        INSERT INTO code_jobs (id, campaign_id, requested, generated, seq_start, status, started_at, finished_at)
        VALUES (:id, :campaign_id, :requested, :generated, :seq_start, :status,
                CASE WHEN :done THEN now() END, CASE WHEN :done THEN now() END)
        RETURNING {repo.JOB_COLUMNS}
        """,
        id=job_id,
        campaign_id=campaign_id,
        requested=body.count,
        generated=body.count if done else 0,
        seq_start=seq_start,
        status="succeeded" if done else "pending",
        done=done,
    )
    assert row is not None
    log.info("coupon.codes.requested", campaign_id=str(campaign_id), count=body.count, job_id=str(job_id))
    return _job(row), done


async def get_code_job(session: AsyncSession, campaign_id: uuid.UUID, job_id: uuid.UUID) -> CodeJob:
    row = await repo.fetch_one(
        session,
        f"SELECT {repo.JOB_COLUMNS} FROM code_jobs WHERE id = :id AND campaign_id = :cid",
        id=job_id,
        cid=campaign_id,
    )
    if row is None:
        raise NotFound("No code generation job with this id for this campaign.", code="code_job_not_found")
    return _job(row)


CODES_IN_WINDOW = """
SELECT seq, code, customer_id, uses, issued_at FROM codes
 WHERE campaign_id = $1 AND seq > $2 AND seq <= $3
 ORDER BY seq LIMIT $4
"""


async def list_codes(session: AsyncSession, campaign_id: uuid.UUID, page: PageParams) -> Page[CouponCode]:
    """Codes in the order they were made. Reads go by windows of sequence numbers (what the BRIN index
    answers well); sequence numbers are dense, so a window of `4 * limit` nearly always fills a page."""
    campaign = await _campaign_row(session, campaign_id)
    (after,) = page.after(int) or (0,)
    connection = await request_driver_connection(session)
    last = int(campaign.reserved)
    rows: list[Any] = []
    window = 4 * page.limit
    upto = after
    while len(rows) <= page.limit and upto < last:
        start, upto = upto, min(last, upto + window)
        rows += await connection.fetch(CODES_IN_WINDOW, campaign_id, start, upto, page.limit + 1 - len(rows))
        window *= 4
    items = rows[: page.limit]
    cursor = None
    if len(rows) > page.limit:
        cursor = encode_cursor([items[-1]["seq"]])
    return Page[CouponCode](
        items=[
            CouponCode(code=r["code"], customer_id=r["customer_id"], uses=r["uses"], issued_at=r["issued_at"])
            for r in items
        ],
        next_cursor=cursor,
    )


async def check_campaign_exists(session: AsyncSession, campaign_id: uuid.UUID) -> None:
    await _campaign_row(session, campaign_id)


async def stream_codes_csv(
    sessionmaker: async_sessionmaker[AsyncSession], campaign_id: uuid.UUID
) -> AsyncIterator[bytes]:
    """Every code of the campaign as CSV, a window of 10,000 sequence numbers at a time: memory stays at
    one batch whatever the campaign's size, and no transaction stays open between batches."""
    yield b"code,customer_id,uses\n"
    async with sessionmaker() as session, session.begin():
        last = int((await _campaign_row(session, campaign_id)).reserved)
    after = 0
    while after < last:
        async with sessionmaker() as session, session.begin():
            connection = await request_driver_connection(session)
            rows = await connection.fetch(CODES_IN_WINDOW, campaign_id, after, after + CSV_BATCH, CSV_BATCH)
        after += CSV_BATCH
        if rows:
            yield "".join(f"{r['code']},{r['customer_id'] or ''},{r['uses']}\n" for r in rows).encode()


# ---------------------------------------------------------------- issuance and the wallet


# While a generation job runs its batches commit out of order: the cursor stays put until it has finished,
# so no unassigned code below it is skipped for good.
_ADVANCE_CURSOR = """
CASE WHEN EXISTS (SELECT 1 FROM code_jobs j WHERE j.campaign_id = :id AND j.status IN ('pending', 'running'))
     THEN issue_cursor ELSE greatest(issue_cursor, :seq) END
"""


async def _next_unassigned(session: AsyncSession, campaign: Row[Any]) -> Any:
    """The first unassigned, unused code after the campaign's issue cursor, window by window."""
    connection = await request_driver_connection(session)
    upto = int(campaign.issue_cursor)
    while upto < int(campaign.reserved):
        start, upto = upto, min(int(campaign.reserved), upto + 1000)
        taken = await connection.fetchrow(
            """
            SELECT code, seq FROM codes
             WHERE campaign_id = $1 AND seq > $2 AND seq <= $3 AND customer_id IS NULL AND uses = 0
             ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED
            """,
            campaign.id,
            start,
            upto,
        )
        if taken is not None:
            return taken
    return None


async def issue_coupon(
    session: AsyncSession, runtime: CouponRuntime, campaign_id: uuid.UUID, body: IssuanceRequest
) -> Issuance:
    """Assign the next unassigned, unused code of the campaign to the customer, or make one.

    The campaign row is locked: issuances of one campaign take turns, which keeps `issue_cursor` (where
    the next unassigned code is looked for) exact without scanning the codes already handed out."""
    campaign = await _campaign_row(session, campaign_id, lock=True)
    now = await repo.fetch_one(session, "SELECT now() AS now")
    assert now is not None
    if not campaign.active:
        raise Unprocessable("This campaign is inactive.", code="coupon_not_applicable", reason="inactive")
    if campaign.valid_until is not None and now.now >= campaign.valid_until:
        raise Unprocessable("This campaign has expired.", code="coupon_not_applicable", reason="expired")
    taken = await _next_unassigned(session, campaign)
    if taken is not None:
        code = taken["code"]
        await repo.execute(
            session,
            "UPDATE codes SET customer_id = :customer, issued_at = now() WHERE code = :code",
            customer=body.customer_id,
            code=code,
        )
        await repo.execute(
            session,
            f"UPDATE campaigns SET issued = issued + 1, issue_cursor = {_ADVANCE_CURSOR} WHERE id = :id",
            id=campaign_id,
            seq=taken["seq"],
        )
    else:
        seq = await _reserve_codes(session, runtime, campaign, 1)
        code = await repo.insert_one_code(session, campaign_id, _format(campaign), seq)
        await repo.execute(
            session,
            "UPDATE codes SET customer_id = :customer, issued_at = now() WHERE code = :code",
            customer=body.customer_id,
            code=code,
        )
        await repo.execute(
            session,
            f"UPDATE campaigns SET issued = issued + 1, generated = generated + 1, issue_cursor = {_ADVANCE_CURSOR} "
            "WHERE id = :id",
            id=campaign_id,
            seq=seq,
        )
    log.info("coupon.issued", campaign_id=str(campaign_id), customer_id=body.customer_id)
    issuance = Issuance(
        code=code,
        campaign_id=campaign_id,
        customer_id=body.customer_id,
        discount=_discount(campaign),
        valid_from=campaign.valid_from,
        valid_until=campaign.valid_until,
    )
    coupon = CouponView.model_validate(issuance.model_dump())
    await publish_webhook(session, CouponIssued(customer_id=body.customer_id, coupon=coupon))
    return issuance


_WALLET_STATUS = """
CASE WHEN c.uses >= k.per_code_limit THEN 'redeemed'
     WHEN NOT k.active OR (k.valid_until IS NOT NULL AND k.valid_until <= now()) THEN 'expired'
     ELSE 'active' END
"""


async def wallet(session: AsyncSession, customer_id: str, status: str | None, page: PageParams) -> Page[WalletCoupon]:
    after_at, after_code = page.after(datetime, str) or (None, None)
    rows = await repo.fetch_all(
        session,
        f"""
        SELECT * FROM (
            SELECT c.code, coalesce(c.spelling, c.code) AS spelling, c.campaign_id, k.name AS campaign_name,
                   c.uses, c.issued_at, k.per_code_limit,
                   k.valid_from, k.valid_until, k.discount_type, k.discount_value, k.currency, k.max_discount,
                   {_WALLET_STATUS} AS status
              FROM codes c JOIN campaigns k ON k.id = c.campaign_id
             WHERE c.customer_id = :customer
               AND (CAST(:after_at AS timestamptz) IS NULL OR (c.issued_at, c.code) > (:after_at, :after_code))
        ) w
        WHERE CAST(:status AS text) IS NULL OR w.status = :status
        ORDER BY w.issued_at, w.code LIMIT :limit
        """,
        customer=customer_id,
        after_at=after_at,
        after_code=after_code,
        status=status,
        limit=page.limit + 1,
    )
    items, cursor = paginate(list(rows), page.limit, key=lambda r: [r.issued_at.isoformat(), r.code])
    return Page[WalletCoupon](
        items=[
            WalletCoupon(
                code=r.spelling,
                campaign_id=r.campaign_id,
                campaign_name=r.campaign_name,
                discount=_discount(r),
                status=r.status,
                uses=r.uses,
                uses_left=max(0, r.per_code_limit - r.uses),
                valid_from=r.valid_from,
                valid_until=r.valid_until,
                issued_at=r.issued_at,
            )
            for r in items
        ],
        next_cursor=cursor,
    )


# ---------------------------------------------------------------- validation, redemption, rollback


def _guesser(caller: Caller) -> str | None:
    """Whose budget a failed guess spends: a customer token's minter (so minting a token per guess gains nothing),
    else the caller. Service-to-service calls (kind "internal") are trusted and not throttled."""
    if caller.kind == "internal":
        return None
    if caller.kind == "customer":
        return caller.issuer or "customer:unknown-issuer"
    return f"{caller.kind}:{caller.id}"


async def _checked_code(
    session: AsyncSession, runtime: CouponRuntime, caller: Caller, raw_code: str, customer_id: str
) -> str:
    """The normalised code, once the caller is within its guess ceiling and the check character is right
    (before any lookup)."""
    guesser = _guesser(caller)
    if guesser is not None:
        await runtime.throttle.check_caller(guesser)
    code = normalize(raw_code)
    if not await runtime.formats.accepts(session, code):
        if guesser is not None:
            await runtime.throttle.failed(guesser, customer_id)
        raise NotFound(
            "No such coupon code: it does not match any campaign's format or its check character is wrong "
            "(a typing mistake?).",
            code="coupon_not_found",
            reason="check_character_mismatch",
        )
    return code


async def _unknown(runtime: CouponRuntime, caller: Caller, customer_id: str) -> NotFound:
    guesser = _guesser(caller)
    if guesser is not None:
        await runtime.throttle.failed(guesser, customer_id)
    return NotFound("No such coupon code.", code="coupon_not_found", reason="unknown_code")


def _discount_amount(row: Any, order_total: Decimal, currency: str) -> Decimal:
    """Percent discounts are rounded half up to the currency's minor unit, then capped by `max_discount`;
    no discount exceeds the order total."""
    quantum = Decimal(1).scaleb(-CURRENCY_DECIMALS.get(currency, 2))
    if row["discount_type"] == "percent":
        amount = (order_total * Decimal(row["discount_value"]) / 100).quantize(quantum, rounding=ROUND_HALF_UP)
        if row["max_discount"] is not None:
            amount = min(amount, Decimal(row["max_discount"]))
    else:
        amount = Decimal(row["discount_value"])
    return min(amount, order_total).quantize(quantum, rounding=ROUND_HALF_UP)


def _refusal(row: Any, body: ValidationRequest | RedemptionRequest) -> tuple[str, str] | None:
    """Why this code cannot apply to this order (reason, detail), limits aside."""
    if not row["active"]:
        return "inactive", "This coupon's campaign is inactive."
    if row["valid_from"] is not None and row["now"] < row["valid_from"]:
        return "not_yet_valid", "This coupon is not valid yet."
    if row["valid_until"] is not None and row["now"] >= row["valid_until"]:
        return "expired", "This coupon has expired."
    if row["assigned_to"] is not None and row["assigned_to"] != body.customer_id:
        return "assigned_to_another_customer", "This coupon was issued to another customer."
    if row["currency"] is not None and row["currency"] != body.currency:
        return "currency_mismatch", f"This coupon applies to orders in {row['currency']}."
    if row["min_order_total"] is not None and body.order_total < row["min_order_total"]:
        return "minimum_not_met", f"This coupon needs an order total of at least {row['min_order_total']}."
    if body.categories is not None and row["categories"] and not set(body.categories) & set(row["categories"]):
        return "category_mismatch", "This coupon applies to other categories."
    return None


async def validate(
    session: AsyncSession, runtime: CouponRuntime, caller: Caller, raw_code: str, body: ValidationRequest
) -> ValidationResult:
    code = await _checked_code(session, runtime, caller, raw_code, body.customer_id)
    connection = await request_driver_connection(session)
    row = await connection.fetchrow(repo.READ_CODE, code, body.customer_id)
    if row is None:
        raise await _unknown(runtime, caller, body.customer_id)
    refusal = _refusal(row, body)
    reason = refusal[0] if refusal else None
    if reason is None:
        if row["code_uses"] >= row["per_code_limit"] or (
            row["total_limit"] is not None and row["uses"] >= row["total_limit"]
        ):
            reason = "coupon_exhausted"
        elif (row["customer_uses"] or 0) >= row["per_customer_limit"]:
            reason = "customer_limit_reached"
    if reason is not None:
        return ValidationResult(valid=False, discount_amount=None, reason=reason)
    amount = _discount_amount(row, body.order_total, body.currency)
    return ValidationResult(valid=True, discount_amount=amount, reason=None)


def _redemption(row: Any) -> Redemption:
    return Redemption(
        redemption_id=row["id"],
        discount_amount=row["discount_amount"],
        currency=row["currency"],
        code=row["code"],
        campaign_id=row["campaign_id"],
        customer_id=row["customer_id"],
        order_id=row["order_id"],
        status="rolled_back" if row["rolled_back_at"] is not None else "redeemed",
        created_at=row["created_at"],
        rolled_back_at=row["rolled_back_at"],
    )


async def redeem(
    session: AsyncSession, runtime: CouponRuntime, caller: Caller, raw_code: str, body: RedemptionRequest
) -> Redemption:
    """Idempotent by `order_id` per code: a repeat answers with the first redemption (even if it was since
    rolled back) and changes nothing. Two statements: lock the code row, then everything else at once."""
    code = await _checked_code(session, runtime, caller, raw_code, body.customer_id)
    connection = await request_driver_connection(session)
    row = await connection.fetchrow(repo.LOCK_CODE, code)
    if row is None:
        raise await _unknown(runtime, caller, body.customer_id)
    refusal = _refusal(row, body)
    exhausted = row["code_uses"] >= row["per_code_limit"]
    amount = _discount_amount(row, body.order_total, body.currency)
    result = await connection.fetchrow(
        repo.REDEEM,
        code,
        body.order_id,
        row["id"],
        body.customer_id,
        row["per_customer_limit"],
        refusal is None and not exhausted,
        row["total_limit"] is not None,
        uuid.uuid4(),
        body.order_total,
        body.currency,
        amount,
    )
    assert result is not None
    if result["is_new"] is False:
        if result["customer_id"] != body.customer_id:
            raise Conflict(
                "This order id was already used with this coupon by another customer.", code="order_id_conflict"
            )
        return _redemption(result)
    if refusal is not None:
        raise Unprocessable(refusal[1], code="coupon_not_applicable", reason=refusal[0])
    if exhausted:
        raise Conflict("This coupon code has been used up.", code="coupon_exhausted", limit="per_code")
    if not result["customer_taken"]:
        raise Conflict(
            "This customer has used this campaign's coupons as often as allowed.",
            code="customer_limit_reached",
            limit=row["per_customer_limit"],
        )
    if result["is_new"] is None:
        # the customer's use was taken but the campaign's total was reached; raising rolls the former back
        raise Conflict("This campaign's coupons have all been used.", code="coupon_exhausted", limit="total")
    redemption = _redemption(result)
    # a code given under an experiment: its discount is what that reward cost
    await experiments.record_follow_up(
        session, code, f"redemption:{redemption.redemption_id}", money=amount, currency=body.currency
    )
    view = CouponRedemptionView.model_validate(redemption.model_dump())
    await publish_webhook(session, CouponRedeemed(customer_id=redemption.customer_id, redemption=view))
    return redemption


async def roll_back(session: AsyncSession, redemption_id: uuid.UUID) -> Redemption:
    """Give the use back (order cancelled). A repeat answers with the rolled-back redemption."""
    row = await repo.fetch_one(session, repo.ROLL_BACK, id=redemption_id)
    if row is None:
        existing = await repo.fetch_one(
            session, f"SELECT {repo.REDEMPTION_COLUMNS} FROM redemptions WHERE id = :id", id=redemption_id
        )
        if existing is None:
            raise NotFound("No coupon redemption with this id.", code="redemption_not_found")
        return _redemption(existing._mapping)
    for statement in repo.GIVE_BACK:
        await repo.execute(session, statement, code=row.code, campaign_id=row.campaign_id, customer_id=row.customer_id)
    log.info("coupon.redemption.rolled_back", redemption_id=str(redemption_id))
    redemption = _redemption(row._mapping)
    await experiments.record_follow_up(
        session, row.code, f"rollback:{redemption_id}", money=-redemption.discount_amount, currency=redemption.currency
    )
    return redemption


# ---------------------------------------------------------------- surprise rules

RULE_COLUMNS = "id, campaign_id, reward_id, trigger_type, n, amount, currency, active, created_at"


def _rule(row: Row[Any]) -> Rule:
    trigger: dict[str, Any] = {"type": row.trigger_type}
    if row.trigger_type == "nth_purchase":
        trigger["n"] = row.n
    elif row.trigger_type == "order_total_at_least":
        trigger.update(amount=row.amount, currency=row.currency)
    return Rule.model_validate(
        {
            "id": row.id,
            "campaign_id": row.campaign_id,
            "reward_id": row.reward_id,
            "trigger": trigger,
            "active": row.active,
            "created_at": row.created_at,
        }
    )


async def create_rule(session: AsyncSession, body: RuleCreate) -> Rule:
    # A gift's reward lives in the points service (no service reads another's schema): an unknown or inactive
    # reward is found out when the rule fires, and the points service then grants nothing (logged).
    if body.campaign_id is not None:
        await _campaign_row(session, body.campaign_id)
    trigger = body.trigger.model_dump()
    row = await repo.fetch_one(
        session,
        f"""
        INSERT INTO coupon_rules (id, campaign_id, reward_id, trigger_type, n, amount, currency)
        VALUES (:id, :campaign_id, :reward_id, :type, :n, :amount, :currency) RETURNING {RULE_COLUMNS}
        """,
        id=uuid.uuid4(),
        campaign_id=body.campaign_id,
        reward_id=body.reward_id,
        type=trigger["type"],
        n=trigger.get("n"),
        amount=trigger.get("amount"),
        currency=trigger.get("currency"),
    )
    assert row is not None
    return _rule(row)


async def get_rule(session: AsyncSession, rule_id: uuid.UUID) -> Rule:
    row = await repo.fetch_one(session, f"SELECT {RULE_COLUMNS} FROM coupon_rules WHERE id = :id", id=rule_id)
    if row is None:
        raise NotFound("No coupon rule with this id.", code="rule_not_found")
    return _rule(row)


async def list_rules(session: AsyncSession, page: PageParams) -> Page[Rule]:
    after_at, after_id = page.after(datetime, uuid.UUID) or (None, None)
    rows = await repo.fetch_all(
        session,
        f"""
        SELECT {RULE_COLUMNS} FROM coupon_rules
         WHERE CAST(:after_at AS timestamptz) IS NULL OR (created_at, id) > (:after_at, CAST(:after_id AS uuid))
         ORDER BY created_at, id LIMIT :limit
        """,
        after_at=after_at,
        after_id=after_id,
        limit=page.limit + 1,
    )
    items, cursor = paginate(list(rows), page.limit, key=lambda r: [r.created_at.isoformat(), str(r.id)])
    return Page[Rule](items=[_rule(r) for r in items], next_cursor=cursor)


async def update_rule(session: AsyncSession, rule_id: uuid.UUID, body: RulePatch) -> Rule:
    if body.active is False:
        # a coupon rule is lever `coupon_rule`, a gift rule lever `reward`; ids are unique across both
        for lever in ("coupon_rule", "reward"):
            await experiments.ensure_lever_free(session, lever, str(rule_id))
    row = await repo.fetch_one(
        session,
        f"UPDATE coupon_rules SET active = :active WHERE id = :id RETURNING {RULE_COLUMNS}",
        id=rule_id,
        active=body.active,
    )
    if row is None:
        raise NotFound("No coupon rule with this id.", code="rule_not_found")
    return _rule(row)


# ---------------------------------------------------------------- coupon rewards (keyed issuance)


def _issuance_answer(row: Row[Any]) -> RewardIssuance:
    return RewardIssuance(status=row.status, code=row.code, reason=row.reason)


async def issue_for_reward(
    session: AsyncSession, runtime: CouponRuntime, body: RewardIssuanceRequest
) -> RewardIssuance:
    """Issue a code for a points redemption, once per key: a repeat (or a key voided first) answers what the
    key's row says. The row is inserted before the code is assigned: a concurrent call with the same key waits
    on it and then reads the outcome."""
    first = await repo.fetch_one(
        session,
        "INSERT INTO reward_issuances (key, status, campaign_id, customer_id) VALUES (:key, 'issued', :c, :customer) "
        "ON CONFLICT (key) DO NOTHING RETURNING key",
        key=body.key,
        c=body.campaign_id,
        customer=body.customer_id,
    )
    if first is None:
        row = await repo.fetch_one(
            session, "SELECT status, code, reason FROM reward_issuances WHERE key = :key", key=body.key
        )
        assert row is not None
        return _issuance_answer(row)
    try:
        async with session.begin_nested():
            issued = await issue_coupon(
                session, runtime, body.campaign_id, IssuanceRequest(customer_id=body.customer_id)
            )
    except DomainError as exc:
        # the campaign cannot issue (unknown, inactive, expired): final, the points service gives the points back
        reason = str(exc.extra.get("reason") or exc.instance_code)[:64]
        await repo.execute(
            session,
            "UPDATE reward_issuances SET status = 'refused', reason = :reason WHERE key = :key",
            key=body.key,
            reason=reason,
        )
        log.info("coupon.reward_issuance.refused", key=str(body.key), reason=reason)
        return RewardIssuance(status="refused", code=None, reason=reason)
    await repo.execute(
        session, "UPDATE reward_issuances SET code = :code WHERE key = :key", key=body.key, code=issued.code
    )
    log.info("coupon.reward_issuance.issued", key=str(body.key), campaign_id=str(body.campaign_id))
    return RewardIssuance(status="issued", code=issued.code, reason=None)


async def void_reward_issuance(session: AsyncSession, key: uuid.UUID) -> RewardIssuance:
    """No code will ever be issued for this key, unless one was already: then that code is the answer."""
    first = await repo.fetch_one(
        session,
        "INSERT INTO reward_issuances (key, status) VALUES (:key, 'voided') ON CONFLICT (key) DO NOTHING RETURNING key",
        key=key,
    )
    if first is not None:
        log.info("coupon.reward_issuance.voided", key=str(key))
        return RewardIssuance(status="voided", code=None, reason=None)
    row = await repo.fetch_one(session, "SELECT status, code, reason FROM reward_issuances WHERE key = :key", key=key)
    assert row is not None
    return _issuance_answer(row)
