"""HTTP routes of the survey service: thin, each a call into the domain layer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Query, Request

from kit.auth import CallerDep, requires
from kit.db import SessionDep, service_router
from kit.errors import problem_responses
from kit.imports import IMPORT_MEDIA_TYPES, ImportReport, parse_lines
from kit.pagination import Page, PageParamsDep
from kit.state import AppState
from kit.types import CustomerIdPath
from survey import service
from survey.schemas import (
    Interval,
    Invitation,
    InvitationCreate,
    InvitationForm,
    InvitationQueued,
    OptOutLine,
    PendingSurvey,
    ResponseCreate,
    ResponseCreated,
    Survey,
    SurveyCreate,
    SurveyResults,
)
from survey.settings import SurveySettings

router = service_router(tags=["survey"])


def policy_from(settings: SurveySettings) -> service.InvitePolicy:
    return service.InvitePolicy(
        public_base_url=settings.public_base_url,
        sender=settings.smtp_from,
        ttl_days=settings.invitation_ttl_days,
        quota_per_day=settings.send_quota_per_day,
    )


POLICY: AppState[service.InvitePolicy] = AppState("invite_policy")
PolicyDep = Annotated[service.InvitePolicy, Depends(POLICY)]


@router.post(
    "/v1/surveys",
    dependencies=[requires("surveys:write")],
    status_code=201,
    operation_id="create_survey",
    response_model=Survey,
    responses=problem_responses(422),
)
async def create(body: SurveyCreate, session: SessionDep) -> Survey:
    return await service.create_survey(session, body)


@router.get(
    "/v1/surveys",
    dependencies=[requires("surveys:read")],
    operation_id="list_surveys",
    response_model=Page[Survey],
    responses=problem_responses(422),
)
async def list_(session: SessionDep, page: PageParamsDep) -> Page[Survey]:
    return await service.list_surveys(session, page)


@router.get(
    "/v1/surveys/{survey_id}",
    dependencies=[requires("surveys:read")],
    operation_id="get_survey",
    response_model=Survey,
    responses=problem_responses(404, 422),
)
async def get(survey_id: uuid.UUID, session: SessionDep) -> Survey:
    return await service.get_survey(session, survey_id)


@router.post(
    "/v1/surveys/{survey_id}/invitations",
    dependencies=[requires("surveys:write")],
    status_code=201,
    operation_id="create_survey_invitation",
    response_model=InvitationQueued,
    responses=problem_responses(404, 409, 422, 429),
)
async def invite(
    survey_id: uuid.UUID, body: InvitationCreate, session: SessionDep, caller: CallerDep, policy: PolicyDep
) -> InvitationQueued:
    return await service.invite(session, policy, survey_id, body.customer_id, body.email, caller=caller)


@router.get(
    "/v1/surveys/{survey_id}/invitations/{invitation_id}",
    dependencies=[requires("surveys:read")],
    operation_id="get_survey_invitation_status",
    response_model=Invitation,
    responses=problem_responses(404, 422),
)
async def invitation_status(survey_id: uuid.UUID, invitation_id: uuid.UUID, session: SessionDep) -> Invitation:
    return await service.invitation_status(session, survey_id, invitation_id)


@router.get(
    "/v1/surveys/{survey_id}/results",
    dependencies=[requires("surveys:read")],
    operation_id="get_survey_results",
    response_model=SurveyResults,
    responses=problem_responses(404, 422),
)
async def results(
    survey_id: uuid.UUID,
    session: SessionDep,
    from_: Annotated[datetime | None, Query(alias="from", description="Start (inclusive), RFC 3339.")] = None,
    to: Annotated[datetime | None, Query(description="End (exclusive), RFC 3339.")] = None,
    interval: Annotated[Interval, Query(description="Trend period (UTC; weeks start on Monday).")] = "week",
) -> SurveyResults:
    return await service.results(session, survey_id, from_, to, interval)


@router.get(
    "/v1/survey-invitations/{token}",
    dependencies=[requires("surveys:read", customer=True)],
    operation_id="get_survey_invitation_form",
    response_model=InvitationForm,
    responses=problem_responses(404, 409, 410),
)
async def invitation_form(token: str, session: SessionDep, caller: CallerDep) -> InvitationForm:
    return await service.invitation_form(session, token, caller)


@router.post(
    "/v1/survey-responses",
    dependencies=[requires("surveys:write", customer=True)],
    status_code=201,
    operation_id="submit_survey_response",
    response_model=ResponseCreated,
    responses=problem_responses(404, 409, 410, 422),
)
async def respond(body: ResponseCreate, session: SessionDep, caller: CallerDep) -> ResponseCreated:
    answers = [(answer.question_id, answer.value) for answer in body.answers]
    return await service.submit_response(session, body.token, answers, caller=caller)


@router.get(
    "/v1/customers/{customer_id}/surveys",
    dependencies=[requires("surveys:read", customer=True)],
    operation_id="list_customer_pending_surveys",
    response_model=Page[PendingSurvey],
    responses=problem_responses(404, 422),
)
async def customer_surveys(
    customer_id: CustomerIdPath,
    session: SessionDep,
    page: PageParamsDep,
    status: Annotated[Literal["pending"], Query(description="Only `pending` (answerable) for now.")] = "pending",
) -> Page[PendingSurvey]:
    return await service.pending_for_customer(session, customer_id, page)


@router.post(
    "/v1/survey-opt-outs:import",
    dependencies=[requires()],
    operation_id="import_survey_opt_outs",
    responses=problem_responses(403, 413, 415),
    openapi_extra={"requestBody": {"required": True, "content": IMPORT_MEDIA_TYPES}},
)
async def import_opt_outs(request: Request, session: SessionDep) -> ImportReport:
    """Customers and addresses who asked never to be surveyed, NDJSON or CSV (`customer_id,email`)."""
    lines = await parse_lines(request.stream(), request.headers.get("content-type", ""), OptOutLine)
    return await service.import_opt_outs(session, lines)
