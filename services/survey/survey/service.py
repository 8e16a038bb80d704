"""Survey domain logic: surveys, invitations (throttle, suppression, quota), answers and results.

No FastAPI here: callers pass plain values and get schemas back; refusals are kit errors.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from kit import contracts, experiments
from kit.auth import Caller
from kit.contracts import SurveyInvited
from kit.errors import Conflict, DomainError, FieldError, NotFound, TooManyRequests, ValidationFailed
from kit.events import publish
from kit.imports import ImportReport, ParsedLines
from kit.pagination import Page, PageParams, paginate
from kit.webhooks import SurveyAnswered, SurveyDetractor, SurveyResponseView, publish_webhook
from survey import repository
from survey.rendering import invitation_message
from survey.repository import OpenInvitation
from survey.schemas import (
    MAX_TEXT_ANSWER,
    Invitation,
    InvitationForm,
    InvitationQueued,
    NpsSummary,
    OptOutLine,
    PendingSurvey,
    Question,
    ResponseCreated,
    Survey,
    SurveyCreate,
    SurveyResults,
    TrendPoint,
)

log = structlog.get_logger("survey.service")
REWARD_LEVER = "survey_reward"

TOKEN_BYTES = 32  # 256 random bits; the contract asks for at least 128
MAX_TOKEN_LENGTH = 128
MAX_TREND_PERIODS = 1000
QUOTA_CALLER_KINDS = ("partner", "customer")


class Gone(DomainError):
    status = 410
    code = "invitation_expired"


@dataclass(frozen=True)
class InvitePolicy:
    """The settings that shape an invitation."""

    public_base_url: str
    sender: str
    ttl_days: int
    quota_per_day: int


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


_TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9_-]+")  # secrets.token_urlsafe's alphabet


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _caller_key(caller: Caller | None) -> str:
    return f"{caller.kind}:{caller.id}" if caller else "internal:events"


def _now() -> datetime:
    return datetime.now(UTC)


# Surveys


async def create_survey(session: AsyncSession, body: SurveyCreate) -> Survey:
    row = await repository.insert_survey(
        session,
        {
            "id": uuid.uuid4(),
            "name": body.name,
            "questions": [q.model_dump(exclude_none=True) for q in body.questions],
            "reward_points": body.reward_points,
            "cooldown_days": body.cooldown_days,
            "send_after_purchase": body.send_after_purchase,
        },
    )
    return row


async def get_survey(session: AsyncSession, survey_id: uuid.UUID) -> Survey:
    row = await repository.get_survey(session, survey_id)
    if row is None:
        raise NotFound("No survey with this id.", code="survey_not_found")
    return row


async def list_surveys(session: AsyncSession, page: PageParams) -> Page[Survey]:
    rows = await repository.list_surveys(session, page.limit, page.after(datetime, uuid.UUID))
    items, cursor = paginate(rows, page.limit, key=lambda r: (r.created_at.isoformat(), str(r.id)))
    return Page[Survey](items=list(items), next_cursor=cursor)


# Invitations


@dataclass(frozen=True)
class _SurveyFacts:
    name: str
    cooldown_days: int
    reward_points: int | None


# Surveys cannot be changed once created, so what an invitation needs of one is cached per process.
_FACTS: dict[uuid.UUID, _SurveyFacts] = {}
_FACTS_LIMIT = 4096


async def _survey_facts(session: AsyncSession, survey_id: uuid.UUID) -> _SurveyFacts:
    facts = _FACTS.get(survey_id)
    if facts is None:
        row = await repository.survey_facts(session, survey_id)
        if row is None:
            raise NotFound("No survey with this id.", code="survey_not_found")
        if len(_FACTS) >= _FACTS_LIMIT:
            _FACTS.clear()
        facts = _FACTS[survey_id] = _SurveyFacts(row.name, row.cooldown_days, row.reward_points)
    return facts


async def invite(
    session: AsyncSession,
    policy: InvitePolicy,
    survey_id: uuid.UUID,
    customer_id: str,
    email: str,
    *,
    caller: Caller | None,
    send_at: datetime | None = None,
    source: str = "api",
    purchase_id: str | None = None,
) -> InvitationQueued:
    """Checks the suppression list, the per-customer throttle and the caller's quota, then writes the
    invitation and its rendered message (the mail outbox row) in the caller's transaction."""
    email = email.lower()
    now = _now()
    send_at = send_at or now
    survey = await _survey_facts(session, survey_id)
    # An experiment on the survey's reward: the holdout's invitation still goes out, promising nothing.
    experiment = None
    if survey.reward_points:
        experiment = await experiments.running_experiment(session, REWARD_LEVER, str(survey_id), send_at)
    withheld = experiment is not None and experiment.arm(customer_id) == "holdout"
    counted = caller is not None and caller.kind in QUOTA_CALLER_KINDS
    if counted and not await repository.count_send(session, _caller_key(caller), now.date(), policy.quota_per_day):
        tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        raise TooManyRequests(
            f"The daily quota of {policy.quota_per_day} invitations is used up.",
            code="send_quota_exceeded",
            retry_after=int((tomorrow - now).total_seconds()) + 1,
        )

    invitation_id = uuid.uuid4()
    token = new_token()
    expires_at = send_at + timedelta(days=policy.ttl_days)
    base = policy.public_base_url.rstrip("/")
    # The message (with the raw token in its link) is rendered now and lives only in the mail outbox row
    # until the SMTP server accepts it; the invitation itself keeps only the token's hash.
    message = invitation_message(
        invitation_id=str(invitation_id),
        sender=policy.sender,
        recipient=email,
        survey_name=survey.name,
        survey_url=f"{base}/s/{token}",
        unsubscribe_url=f"{base}/s/{token}/unsubscribe",
        reward_points=None if withheld else survey.reward_points,
        expires_at=expires_at,
        sent_at=send_at,
    )
    suppressed, invited = await repository.insert_invitation(
        session,
        {
            "id": invitation_id,
            "survey_id": survey_id,
            "customer_id": customer_id,
            "email": email,
            "token_hash": hash_token(token),
            "source": source,
            "caller": _caller_key(caller),
            "send_at": send_at,
            "expires_at": expires_at,
            "cooldown_days": survey.cooldown_days,
            "message": message,
            "reward_withheld": withheld,
            "purchase_id": purchase_id,
        },
    )
    if suppressed:
        raise Conflict("This customer has opted out of surveys.", code="customer_opted_out")
    if not invited:
        last = await repository.last_invited_at(session, customer_id)
        next_at = (last + timedelta(days=survey.cooldown_days)) if last else None
        raise Conflict(
            f"This customer was invited within the last {survey.cooldown_days} days.",
            code="survey_throttled",
            next_invitation_at=next_at.isoformat() if next_at else None,
        )
    invited_event = SurveyInvited(
        invitation_id=invitation_id,
        survey_id=survey_id,
        customer_id=customer_id,
        send_at=send_at,
        expires_at=expires_at,
    )
    await publish(session, invited_event)
    if experiment is not None:
        await experiments.record(
            session,
            experiment,
            customer_id,
            key=f"invitation:{invitation_id}",
            occurred_at=send_at,
            withheld=withheld,
            reference=str(invitation_id),
        )
    return InvitationQueued(invitation_id=invitation_id, status="queued")


async def invitation_status(session: AsyncSession, survey_id: uuid.UUID, invitation_id: uuid.UUID) -> Invitation:
    row = await repository.invitation_status(session, survey_id, invitation_id)
    if row is None:
        raise NotFound("No invitation with this id for this survey.", code="invitation_not_found")
    return row


async def pending_for_customer(session: AsyncSession, customer_id: str, page: PageParams) -> Page[PendingSurvey]:
    """Invitations already sent (or due) that the customer can still answer."""
    rows = await repository.pending_invitations(session, customer_id, page.limit, page.after(datetime, uuid.UUID))
    items, cursor = paginate(rows, page.limit, key=lambda r: (r.created_at.isoformat(), str(r.id)))
    return Page[PendingSurvey](
        items=[
            PendingSurvey(
                invitation_id=r.id,
                survey_id=r.survey_id,
                name=r.name,
                reward_points=r.reward_points,
                sent_at=r.sent_at,
                expires_at=r.expires_at,
            )
            for r in items
        ],
        next_cursor=cursor,
    )


async def schedule_after_purchase(
    session: AsyncSession,
    policy: InvitePolicy,
    customer_id: str,
    email: str,
    delay: timedelta,
    purchase_id: str | None = None,
) -> InvitationQueued | None:
    """Invite to the newest post-purchase survey after `delay`; None when there is nothing to do."""
    survey = await repository.latest_post_purchase_survey(session)
    if survey is None:
        return None
    try:
        async with session.begin_nested():
            return await invite(
                session,
                policy,
                survey.id,
                customer_id,
                email,
                caller=None,
                send_at=_now() + delay,
                source="purchase",
                purchase_id=purchase_id,
            )
    except Conflict as refusal:
        log.info("survey.purchase_invitation_skipped", customer_id=customer_id, reason=refusal.instance_code)
        return None


# Answering


async def _find(session: AsyncSession, token: str) -> OpenInvitation | None:
    # what no link of ours holds (control characters, other alphabets, dot segments) is unknown without a query
    if not token or len(token) > MAX_TOKEN_LENGTH or not _TOKEN_CHARACTERS.fullmatch(token):
        return None
    return await repository.invitation_by_token(session, hash_token(token))


def _unknown() -> NotFound:
    return NotFound("This survey link is not valid.", code="invitation_not_found")


async def open_invitation(session: AsyncSession, token: str, caller: Caller | None = None) -> OpenInvitation:
    """The survey behind a link that can still be answered (404 unknown, 409 used, 410 expired)."""
    row = await _find(session, token)
    if row is None or (caller is not None and caller.kind == "customer" and caller.id != row.customer_id):
        raise _unknown()
    if row.used_at is not None:
        raise Conflict("This survey has already been answered.", code="invitation_used")
    if row.expires_at <= _now():
        raise Gone("This survey link has expired.")
    return row


async def invitation_form(session: AsyncSession, token: str, caller: Caller | None = None) -> InvitationForm:
    found = await open_invitation(session, token, caller)
    return InvitationForm(
        invitation_id=found.id,
        survey_id=found.survey_id,
        name=found.name,
        questions=found.questions,
        reward_points=found.reward_points,
        expires_at=found.expires_at,
    )


class _Answers:
    """Validated answers: what is stored, and the NPS/rating scores that results aggregate."""

    INT_RANGES: ClassVar[dict[str, tuple[int, int]]] = {"nps": (0, 10), "rating": (1, 5)}

    def __init__(self) -> None:
        self.stored: list[dict[str, Any]] = []
        self.scores: list[tuple[str, str, int]] = []
        self.errors: list[FieldError] = []


def validate_answers(
    questions: Sequence[Question], answers: Sequence[tuple[str, Any]], *, from_form: bool = False
) -> _Answers:
    """Each answer checked against its question's type; required questions must be answered.

    Form posts carry only strings: there, numbers are parsed, an empty field is no answer and fields that are
    not questions are ignored.
    """
    result = _Answers()
    by_id = {q.id: q for q in questions}
    given: dict[str, Any] = {}
    for index, (question_id, value) in enumerate(answers):
        field = f"answers.{index}.question_id"
        if question_id not in by_id:
            if from_form:  # a stray form field is not the customer's mistake
                continue
            result.errors.append(FieldError(field, f"No question {question_id!r} in this survey."))
        elif question_id in given:
            result.errors.append(FieldError(field, f"Question {question_id!r} is answered twice."))
        else:
            given[question_id] = value
    for question in questions:
        field = f"answers.{question.id}"
        value = given.get(question.id)
        if isinstance(value, str) and (from_form or question.type != "text"):
            value = value.strip()
        if value is None or value == "":
            if question.required:
                result.errors.append(FieldError(field, "This question is required."))
            continue
        if question.type in _Answers.INT_RANGES:
            low, high = _Answers.INT_RANGES[question.type]
            if from_form and isinstance(value, str) and value.lstrip("-").isdigit() and len(value) < 4:
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                result.errors.append(FieldError(field, f"Must be a whole number from {low} to {high}."))
                continue
            result.scores.append((question.id, question.type, value))
        elif question.type == "text":
            if not isinstance(value, str):
                result.errors.append(FieldError(field, "Must be text."))
                continue
            if len(value) > MAX_TEXT_ANSWER:
                result.errors.append(FieldError(field, f"At most {MAX_TEXT_ANSWER} characters."))
                continue
            if "\x00" in value:
                result.errors.append(FieldError(field, "Must not contain NUL characters."))
                continue
        elif question.type == "choice" and (not isinstance(value, str) or value not in (question.options or ())):
            result.errors.append(FieldError(field, "Must be one of the question's options."))
            continue
        result.stored.append({"question_id": question.id, "value": value})
    return result


def preferred_categories(questions: Sequence[Question], stored: Sequence[dict[str, Any]]) -> list[str]:
    """The categories that the options chosen on preference questions map to (in question order, each once)."""
    chosen = {a["question_id"]: a["value"] for a in stored}
    out: list[str] = []
    for question in questions:
        mapping = question.preference_categories
        if mapping and chosen.get(question.id) in mapping:
            category = mapping[chosen[question.id]]
            if category not in out:
                out.append(category)
    return out


async def submit_response(
    session: AsyncSession,
    token: str,
    answers: Sequence[tuple[str, Any]],
    *,
    caller: Caller | None = None,
    from_form: bool = False,
) -> ResponseCreated:
    """Records the answers once per link and, in the same transaction, publishes the reward and the
    detractor events; a second submission of the same link is 409 `invitation_used`."""
    found = await open_invitation(session, token, caller)
    checked = validate_answers(found.questions, answers, from_form=from_form)
    if checked.errors:
        raise ValidationFailed(checked.errors, detail="Some answers are not valid.")
    now = _now()
    if not await repository.use_invitation(session, found.id, now):
        raise Conflict("This survey has already been answered.", code="invitation_used")
    response_id = uuid.uuid4()
    await repository.insert_response(
        session,
        {
            "id": response_id,
            "invitation_id": found.id,
            "survey_id": found.survey_id,
            "customer_id": found.customer_id,
            "answers": checked.stored,
            "submitted_at": now,
        },
        [
            {
                "response_id": response_id,
                "question_id": qid,
                "survey_id": found.survey_id,
                "kind": kind,
                "score": score,
                "submitted_at": now,
            }
            for qid, kind, score in checked.scores
        ],
    )
    answer: dict[str, Any] = {
        "response_id": response_id,
        "invitation_id": found.id,
        "survey_id": found.survey_id,
        "customer_id": found.customer_id,
    }
    if found.survey_reward_points:
        # under an experiment on the reward, the reward given or withheld here is recorded alike
        await experiments.record_follow_up(
            session,
            str(found.id),
            f"response:{found.id}",
            withheld=found.reward_points is None,
            points=found.survey_reward_points,
        )
    if found.reward_points:
        await publish(session, contracts.SurveyResponded(**answer, reward_points=found.reward_points), occurred_at=now)
    nps_scores = [score for _, kind, score in checked.scores if kind == "nps"]
    if nps_scores and min(nps_scores) <= 6:
        # about a purchase, the recommender weighs its products less for this customer
        detractor = contracts.SurveyDetractor(**answer, score=min(nps_scores), purchase_id=found.purchase_id)
        await publish(session, detractor, occurred_at=now)
    preferred = preferred_categories(found.questions, checked.stored)
    if preferred:
        await publish(session, contracts.SurveyPreference(**answer, categories=preferred), occurred_at=now)
    response = SurveyResponseView(
        response_id=response_id,
        survey_id=found.survey_id,
        invitation_id=found.id,
        answers=checked.stored,
        submitted_at=now,
    )
    await publish_webhook(session, SurveyAnswered(customer_id=found.customer_id, response=response))
    if nps_scores and min(nps_scores) <= 6:
        detractor_event = SurveyDetractor(
            customer_id=found.customer_id, survey_id=found.survey_id, response_id=response_id, score=min(nps_scores)
        )
        await publish_webhook(session, detractor_event)
    log.info("survey.responded", survey_id=str(found.survey_id), response_id=str(response_id))
    return ResponseCreated(
        response_id=response_id,
        invitation_id=found.id,
        survey_id=found.survey_id,
        reward_points=found.reward_points,
        submitted_at=now,
    )


# Opting out


async def unsubscribe_target(session: AsyncSession, token: str) -> str:
    """The customer a link belongs to. Used and expired links still unsubscribe: an old email must work."""
    row = await _find(session, token)
    if row is None:
        raise _unknown()
    return str(row.customer_id)


async def unsubscribe(session: AsyncSession, token: str) -> None:
    row = await _find(session, token)
    if row is None:
        raise _unknown()
    await repository.suppress(session, row.customer_id, row.email, "opt_out")
    await repository.cancel_pending_mail(session, row.customer_id)
    log.info("survey.opted_out", customer_id=row.customer_id)


async def import_opt_outs(session: AsyncSession, lines: ParsedLines[OptOutLine]) -> ImportReport:
    """Opt-outs from another programme: never invited again, and what waits to be sent them is cancelled."""
    added = await repository.import_opt_outs(session, [(line.customer_id, line.email) for _, line in lines.valid])
    accepted = sum(added)
    duplicates = len(added) - accepted
    log.info("survey.opt_outs.imported", accepted=accepted, duplicates=duplicates, rejected=len(lines.rejected))
    return lines.report(accepted, duplicates)


# Results

_STEP = {"day": timedelta(days=1), "week": timedelta(weeks=1)}


def _next_period(start: datetime, interval: str) -> datetime:
    if interval == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + _STEP[interval]


def _truncate(moment: datetime, interval: str) -> datetime:
    moment = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        return moment - timedelta(days=moment.weekday())
    if interval == "month":
        return moment.replace(day=1)
    return moment


def _nps(promoters: int, detractors: int, answered: int) -> float | None:
    return round(100 * (promoters - detractors) / answered, 1) if answered else None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def results(
    session: AsyncSession, survey_id: uuid.UUID, start: datetime | None, end: datetime | None, interval: str
) -> SurveyResults:
    """`invited`/`responded` count invitations made within [from, to) and how many of those were answered;
    NPS, CSAT and the trend count answers submitted within [from, to)."""
    start, end = _utc(start), _utc(end)
    if start and end and start >= end:
        raise ValidationFailed([FieldError("from", "Must be before `to`.")])
    if start and end and (end - start) / _STEP.get(interval, timedelta(days=28)) > MAX_TREND_PERIODS:
        raise ValidationFailed([FieldError("interval", f"At most {MAX_TREND_PERIODS} periods; use a longer one.")])
    await get_survey(session, survey_id)
    found = await repository.results(session, survey_id, start, end, interval)
    totals = found.totals
    by_period, nps_by_period = found.responses, found.nps

    responses: Mapping[datetime, int] = {r.period.replace(tzinfo=UTC): r.responses for r in by_period}
    nps: Mapping[datetime, Any] = {r.period.replace(tzinfo=UTC): r for r in nps_by_period}
    trend: list[TrendPoint] = []
    known = sorted(responses)
    first = _truncate(start, interval) if start else (known[0] if known else None)
    last = end if end else (known[-1] if known else None)
    period = first
    while period is not None and last is not None and period <= last and len(trend) < MAX_TREND_PERIODS:
        if end is None or period < end:
            row = nps.get(period)
            trend.append(
                TrendPoint(
                    period_start=period,
                    responses=responses.get(period, 0),
                    nps=_nps(row.promoters, row.detractors, row.answered) if row else None,
                )
            )
        try:
            period = _next_period(period, interval)
        except (ValueError, OverflowError):  # past year 9999
            break

    answered_nps = totals.promoters + totals.passives + totals.detractors
    return SurveyResults(
        survey_id=survey_id,
        invited=totals.invited,
        responded=totals.responded,
        response_rate=round(totals.responded / totals.invited, 4) if totals.invited else None,
        nps=NpsSummary(
            score=_nps(totals.promoters, totals.detractors, answered_nps),
            promoters=totals.promoters,
            passives=totals.passives,
            detractors=totals.detractors,
        ),
        csat=round(totals.satisfied / totals.ratings, 4) if totals.ratings else None,
        trend=trend,
    )


async def survey_exists(session: AsyncSession, lever_id: str) -> bool:
    """A survey with a reward is a lever (`survey_reward`); without one there is nothing to withhold."""
    try:
        survey_id = uuid.UUID(lever_id)
    except ValueError:
        return False
    row = await repository.survey_facts(session, survey_id)
    return row is not None and bool(row.reward_points)
