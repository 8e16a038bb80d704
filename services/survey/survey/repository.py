"""SQL of the survey service. Hot paths (inviting, answering) are a few statements each."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import Row, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kit.db import request_driver_connection
from survey.schemas import Invitation, Question, Survey
from survey.tables import response_scores, responses, suppressions, surveys


@dataclass(frozen=True)
class SurveyFacts:
    name: str
    cooldown_days: int
    reward_points: int | None


@dataclass(frozen=True)
class PendingInvitation:
    id: uuid.UUID
    survey_id: uuid.UUID
    name: str
    reward_points: int | None  # None: withheld (an experiment) or a survey without a reward
    sent_at: datetime | None
    expires_at: datetime
    created_at: datetime


@dataclass(frozen=True)
class OpenInvitation:
    """An invitation found by its link's token, with what answering it needs of its survey."""

    id: uuid.UUID
    survey_id: uuid.UUID
    customer_id: str
    email: str
    name: str
    questions: list[Question]
    reward_points: int | None  # what this invitation promises (None: withheld, or no reward)
    expires_at: datetime
    used_at: datetime | None
    survey_reward_points: int | None  # the survey's own reward, whether or not this invitation promised it
    purchase_id: str | None  # a post-purchase invitation: the purchase it asks about


@dataclass(frozen=True)
class Totals:
    invited: int
    responded: int
    promoters: int
    passives: int
    detractors: int
    ratings: int
    satisfied: int


@dataclass(frozen=True)
class PeriodResponses:
    period: datetime
    responses: int


@dataclass(frozen=True)
class PeriodNps:
    period: datetime
    promoters: int
    detractors: int
    answered: int


@dataclass(frozen=True)
class Results:
    totals: Totals
    responses: list[PeriodResponses]
    nps: list[PeriodNps]


Typed = TypeVar("Typed")


def _typed(kind: type[Typed], row: Row[*tuple[Any, ...]]) -> Typed:
    return kind(**row._mapping)


def _typed_or_none(kind: type[Typed], row: Row[*tuple[Any, ...]] | None) -> Typed | None:
    return None if row is None else _typed(kind, row)


SURVEY_COLUMNS = (
    surveys.c.id,
    surveys.c.name,
    surveys.c.questions,
    surveys.c.reward_points,
    surveys.c.cooldown_days,
    surveys.c.send_after_purchase,
    surveys.c.created_at,
)


async def insert_survey(session: AsyncSession, values: dict[str, Any]) -> Survey:
    result = await session.execute(surveys.insert().values(**values).returning(*SURVEY_COLUMNS))
    return _typed(Survey, result.one())


async def get_survey(session: AsyncSession, survey_id: uuid.UUID) -> Survey | None:
    row = (await session.execute(select(*SURVEY_COLUMNS).where(surveys.c.id == survey_id))).one_or_none()
    return _typed_or_none(Survey, row)


async def list_surveys(session: AsyncSession, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[Survey]:
    query = select(*SURVEY_COLUMNS).order_by(surveys.c.created_at, surveys.c.id).limit(limit + 1)
    if after:
        created_at, survey_id = after
        query = query.where(
            (surveys.c.created_at > created_at) | ((surveys.c.created_at == created_at) & (surveys.c.id > survey_id))
        )
    return [_typed(Survey, row) for row in await session.execute(query)]


async def latest_post_purchase_survey(session: AsyncSession) -> Survey | None:
    query = (
        select(*SURVEY_COLUMNS)
        .where(surveys.c.send_after_purchase)
        .order_by(surveys.c.created_at.desc(), surveys.c.id.desc())
        .limit(1)
    )
    return _typed_or_none(Survey, (await session.execute(query)).one_or_none())


async def survey_facts(session: AsyncSession, survey_id: uuid.UUID) -> SurveyFacts | None:
    query = select(surveys.c.name, surveys.c.cooldown_days, surveys.c.reward_points).where(surveys.c.id == survey_id)
    return _typed_or_none(SurveyFacts, (await session.execute(query)).one_or_none())


async def last_invited_at(session: AsyncSession, customer_id: str) -> datetime | None:
    query = text("SELECT last_invited_at FROM contacts WHERE customer_id = :c")
    return await session.scalar(query, {"c": customer_id})  # type: ignore[no-any-return]


_COUNT_SEND = text(
    """
    INSERT INTO send_quota_usage AS q (caller, day, sent) VALUES (:caller, :day, 1)
    ON CONFLICT (caller, day) DO UPDATE SET sent = q.sent + 1 WHERE q.sent < :quota
    RETURNING sent
    """
)


async def count_send(session: AsyncSession, caller: str, day: date, quota: int) -> bool:
    """Count one send against the caller's daily quota; False when the quota is used up."""
    if quota <= 0:
        return False
    params = {"caller": caller, "day": day, "quota": quota}
    return (await session.execute(_COUNT_SEND, params)).first() is not None


# One round trip for the whole decision and write: the suppression list, the throttle, the invitation and its
# message. The throttle is race-free: the upsert takes the customer's `contacts` row lock, so a second
# invitation in flight waits for the first to commit and then sees its timestamp; a refused upsert returns no
# row, and then nothing after it is written.
_INVITE = text(
    """
    WITH suppressed AS (
        SELECT EXISTS (SELECT 1 FROM suppressions
                        WHERE customer_id = :customer_id OR lower(email) = lower(:email)) AS yes),
    contact AS (
        INSERT INTO contacts AS c (customer_id, last_invited_at)
        SELECT :customer_id, :send_at FROM suppressed WHERE NOT suppressed.yes
        ON CONFLICT (customer_id) DO UPDATE
           SET last_invited_at = greatest(c.last_invited_at, EXCLUDED.last_invited_at)
         WHERE :cooldown_days = 0
            OR c.last_invited_at <= EXCLUDED.last_invited_at - make_interval(days => :cooldown_days)
        RETURNING customer_id),
    invitation AS (
        INSERT INTO invitations (id, survey_id, customer_id, email, token_hash, status, source, caller,
                                 send_at, expires_at, reward_withheld, purchase_id)
        SELECT :id, :survey_id, :customer_id, :email, :token_hash, 'queued', :source, :caller,
               :send_at, :expires_at, :reward_withheld, :purchase_id
          FROM contact
        RETURNING id),
    mail AS (
        INSERT INTO mail_outbox (invitation_id, recipient, message, next_attempt_at)
        SELECT id, :email, :message, :send_at FROM invitation
        RETURNING id)
    SELECT (SELECT yes FROM suppressed) AS suppressed, EXISTS (SELECT 1 FROM mail) AS invited
    """
)


async def insert_invitation(session: AsyncSession, values: dict[str, Any]) -> tuple[bool, bool]:
    """(suppressed, invited): the invitation and its rendered message are written only when the customer is
    neither suppressed nor within the cooldown."""
    row = (await session.execute(_INVITE, values)).one()
    return bool(row.suppressed), bool(row.invited)


_INVITATION_STATUS = text(
    """
    SELECT i.id AS invitation_id, i.survey_id, i.customer_id, i.status, i.source, i.created_at, i.send_at,
           i.sent_at, i.expires_at, i.used_at AS responded_at, coalesce(m.attempts, 0) AS attempts, m.last_error
      FROM invitations AS i LEFT JOIN mail_outbox AS m ON m.invitation_id = i.id
     WHERE i.id = :id AND i.survey_id = :survey_id
    """
)


async def invitation_status(session: AsyncSession, survey_id: uuid.UUID, invitation_id: uuid.UUID) -> Invitation | None:
    params = {"id": invitation_id, "survey_id": survey_id}
    return _typed_or_none(Invitation, (await session.execute(_INVITATION_STATUS, params)).one_or_none())


_PENDING = text(
    """
    SELECT i.id, i.survey_id, s.name,
           CASE WHEN i.reward_withheld THEN NULL ELSE s.reward_points END AS reward_points,
           i.sent_at, i.expires_at, i.created_at
      FROM invitations AS i JOIN surveys AS s ON s.id = i.survey_id
     WHERE i.customer_id = :customer_id AND i.status IN ('queued', 'sent') AND i.used_at IS NULL
       AND i.expires_at > now() AND i.send_at <= now()
       AND (CAST(:after_created AS timestamptz) IS NULL
            OR (i.created_at, i.id) > (CAST(:after_created AS timestamptz), CAST(:after_id AS uuid)))
     ORDER BY i.created_at, i.id
     LIMIT :limit
    """
)


async def pending_invitations(
    session: AsyncSession, customer_id: str, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[PendingInvitation]:
    params = {
        "customer_id": customer_id,
        "limit": limit + 1,
        "after_created": after[0] if after else None,
        "after_id": after[1] if after else None,
    }
    return [_typed(PendingInvitation, row) for row in await session.execute(_PENDING, params)]


_BY_TOKEN = text(
    """
    SELECT i.id, i.survey_id, i.customer_id, i.email, i.expires_at, i.used_at, i.purchase_id,
           s.name, s.questions, s.reward_points AS survey_reward_points,
           CASE WHEN i.reward_withheld THEN NULL ELSE s.reward_points END AS reward_points
      FROM invitations AS i JOIN surveys AS s ON s.id = i.survey_id
     WHERE i.token_hash = :token_hash
    """
)


async def invitation_by_token(session: AsyncSession, token_hash: bytes) -> OpenInvitation | None:
    row = (await session.execute(_BY_TOKEN, {"token_hash": token_hash})).one_or_none()
    if row is None:
        return None
    return OpenInvitation(**{**row._mapping, "questions": [Question(**q) for q in row.questions]})


async def use_invitation(session: AsyncSession, invitation_id: uuid.UUID, at: datetime) -> bool:
    """Single use: exactly one concurrent submission wins this conditional update."""
    result = await session.execute(
        text("UPDATE invitations SET used_at = :at WHERE id = :id AND used_at IS NULL RETURNING id"),
        {"id": invitation_id, "at": at},
    )
    return result.first() is not None


async def insert_response(session: AsyncSession, values: dict[str, Any], scores: Sequence[dict[str, Any]]) -> None:
    await session.execute(responses.insert().values(**values))
    if scores:
        await session.execute(response_scores.insert(), list(scores))


async def suppress(session: AsyncSession, customer_id: str, email: str | None, reason: str) -> None:
    """Idempotent; an existing entry (an earlier opt-out or bounce) is kept as it was."""
    await session.execute(
        insert(suppressions)
        .values(customer_id=customer_id, email=email, reason=reason)
        .on_conflict_do_nothing(
            index_elements=[suppressions.c.customer_id], index_where=suppressions.c.customer_id.isnot(None)
        )
    )


# Opt-outs of a whole call in four statements, whatever its size (a statement a line cost ~0.5 ms CPU a line,
# scripts/bench_switching.py). Imports take turns (a transaction-scoped advisory lock), so judging a line against
# what the file's earlier lines added is exact; an unsubscribe or a bounce meanwhile is seen by the next call.
_OPT_OUT_IMPORTS_LOCK = "SELECT pg_advisory_xact_lock(hashtext('survey.opt_out_imports'))"

# For each line: its address as the index compares it, and whether the customer or the address is suppressed.
_KNOWN_OPT_OUTS = """
    SELECT lower(u.email),
           EXISTS (SELECT 1 FROM suppressions s WHERE s.customer_id = u.customer_id)
           OR EXISTS (SELECT 1 FROM suppressions s WHERE lower(s.email) = lower(u.email))
      FROM unnest($1::varchar[], $2::varchar[]) WITH ORDINALITY AS u(customer_id, email, ord)
     ORDER BY u.ord
"""

_ADD_OPT_OUTS = """
    INSERT INTO suppressions (customer_id, email, reason)
    SELECT customer_id, email, 'opt_out' FROM unnest($1::varchar[], $2::varchar[]) AS u(customer_id, email)
    ON CONFLICT DO NOTHING
"""

# What waits to be sent them: driven by the few pending messages (a partial index), not by all invitations.
_CANCEL_OPTED_OUT = """
    WITH cancelled AS (
        UPDATE mail_outbox AS m SET status = 'cancelled', message = NULL
          FROM invitations AS i
         WHERE i.id = m.invitation_id AND m.status = 'pending'
           AND (i.customer_id = ANY($1::varchar[]) OR lower(i.email) = ANY($2::varchar[]))
        RETURNING m.invitation_id)
    UPDATE invitations SET status = 'cancelled' WHERE id IN (SELECT invitation_id FROM cancelled)
"""


async def import_opt_outs(session: AsyncSession, lines: Sequence[tuple[str | None, str | None]]) -> list[bool]:
    """Suppress customers and addresses, (customer_id, email) a line, and cancel what waits to be sent them;
    answers, per line, whether it added a suppression (False: already suppressed, here or earlier in the file)."""
    await session.execute(text(_OPT_OUT_IMPORTS_LOCK))
    connection = await request_driver_connection(session)
    customers = [customer for customer, _ in lines]
    emails = [email for _, email in lines]
    known = await connection.fetch(_KNOWN_OPT_OUTS, customers, emails)
    seen_customers: set[str] = set()
    seen_emails: set[str] = set()
    added: list[bool] = []
    for (customer, _), (email_key, suppressed) in zip(lines, known, strict=True):
        fresh = not suppressed and customer not in seen_customers and email_key not in seen_emails
        added.append(fresh)
        if fresh:
            if customer is not None:
                seen_customers.add(customer)
            if email_key is not None:
                seen_emails.add(email_key)
    taken = [line for line, fresh in zip(lines, added, strict=True) if fresh]
    if taken:
        await connection.execute(_ADD_OPT_OUTS, [c for c, _ in taken], [e for _, e in taken])
        await connection.execute(_CANCEL_OPTED_OUT, list(seen_customers), list(seen_emails))
    return added


_CANCEL_PENDING = text(
    """
    WITH cancelled AS (
        UPDATE mail_outbox AS m SET status = 'cancelled', message = NULL
          FROM invitations AS i
         WHERE i.id = m.invitation_id AND i.customer_id = :customer_id AND m.status = 'pending'
        RETURNING m.invitation_id)
    UPDATE invitations SET status = 'cancelled' WHERE id IN (SELECT invitation_id FROM cancelled)
    """
)


async def cancel_pending_mail(session: AsyncSession, customer_id: str) -> None:
    """An opted-out customer gets none of the messages still waiting to go out (scheduled ones included)."""
    await session.execute(_CANCEL_PENDING, {"customer_id": customer_id})


_INVITED = text(
    """
    SELECT count(*) AS invited, count(used_at) AS responded
      FROM invitations
     WHERE survey_id = :survey_id AND status <> 'cancelled'
       AND (CAST(:from_ AS timestamptz) IS NULL OR created_at >= :from_)
       AND (CAST(:to AS timestamptz) IS NULL OR created_at < :to)
    """
)

_SCORES = text(
    """
    SELECT count(*) FILTER (WHERE kind = 'nps' AND score >= 9) AS promoters,
           count(*) FILTER (WHERE kind = 'nps' AND score BETWEEN 7 AND 8) AS passives,
           count(*) FILTER (WHERE kind = 'nps' AND score <= 6) AS detractors,
           count(*) FILTER (WHERE kind = 'rating') AS ratings,
           count(*) FILTER (WHERE kind = 'rating' AND score >= 4) AS satisfied
      FROM response_scores
     WHERE survey_id = :survey_id
       AND (CAST(:from_ AS timestamptz) IS NULL OR submitted_at >= :from_)
       AND (CAST(:to AS timestamptz) IS NULL OR submitted_at < :to)
    """
)

# Periods are computed in UTC; weeks start on Monday (ISO), as date_trunc does.
_TREND_RESPONSES = text(
    """
    SELECT date_trunc(:unit, submitted_at AT TIME ZONE 'UTC') AS period, count(*) AS responses
      FROM responses
     WHERE survey_id = :survey_id
       AND (CAST(:from_ AS timestamptz) IS NULL OR submitted_at >= :from_)
       AND (CAST(:to AS timestamptz) IS NULL OR submitted_at < :to)
     GROUP BY 1
    """
)

_TREND_NPS = text(
    """
    SELECT date_trunc(:unit, submitted_at AT TIME ZONE 'UTC') AS period,
           count(*) FILTER (WHERE score >= 9) AS promoters,
           count(*) FILTER (WHERE score <= 6) AS detractors,
           count(*) AS answered
      FROM response_scores
     WHERE survey_id = :survey_id AND kind = 'nps'
       AND (CAST(:from_ AS timestamptz) IS NULL OR submitted_at >= :from_)
       AND (CAST(:to AS timestamptz) IS NULL OR submitted_at < :to)
     GROUP BY 1
    """
)


async def results(
    session: AsyncSession, survey_id: uuid.UUID, start: datetime | None, end: datetime | None, unit: str
) -> Results:
    params: dict[str, Any] = {"survey_id": survey_id, "from_": start, "to": end}
    reach = (await session.execute(_INVITED, params)).one()
    scores = (await session.execute(_SCORES, params)).one()
    totals = Totals(**reach._mapping, **scores._mapping)
    trend_params = {**params, "unit": unit}
    by_period = [_typed(PeriodResponses, row) for row in await session.execute(_TREND_RESPONSES, trend_params)]
    nps_by_period = [_typed(PeriodNps, row) for row in await session.execute(_TREND_NPS, trend_params)]
    return Results(totals, by_period, nps_by_period)


__all__ = [
    "cancel_pending_mail",
    "count_send",
    "get_survey",
    "insert_invitation",
    "insert_response",
    "insert_survey",
    "invitation_by_token",
    "invitation_status",
    "last_invited_at",
    "latest_post_purchase_survey",
    "list_surveys",
    "pending_invitations",
    "results",
    "suppress",
    "survey_facts",
    "use_invitation",
]
