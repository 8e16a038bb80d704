"""HTTP routes of the coupon service: thin, each a call into the domain layer."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import BackgroundTasks, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from coupon import campaigns, codes, imports, issuance, redemptions, rules
from coupon.runtime import CouponRuntime
from coupon.schemas import (
    Campaign,
    CampaignCreate,
    CampaignPatch,
    CodeJob,
    CodesRequest,
    CouponCode,
    ImportedCodeLine,
    Issuance,
    IssuanceRequest,
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
from kit.auth import CallerDep, requires
from kit.db import SessionDep, service_router
from kit.errors import problem_responses
from kit.imports import IMPORT_MEDIA_TYPES, ImportReport, parse_lines
from kit.pagination import Page, PageParamsDep
from kit.state import DATABASE, AppState
from kit.types import CustomerIdPath

router = service_router(tags=["coupon"])


RUNTIME: AppState[CouponRuntime] = AppState("coupon_runtime")
RuntimeDep = Annotated[CouponRuntime, Depends(RUNTIME)]
CodePath = Annotated[str, Path(min_length=1, max_length=64, description="The code; case and separators ignored.")]


@router.post(
    "/v1/coupon-campaigns",
    dependencies=[requires("coupons:write")],
    operation_id="create_coupon_campaign",
    status_code=201,
    response_model=Campaign,
    responses=problem_responses(422),
)
async def create(body: CampaignCreate, session: SessionDep, runtime: RuntimeDep) -> Campaign:
    return await campaigns.create_campaign(session, runtime, body)


@router.get(
    "/v1/coupon-campaigns",
    dependencies=[requires("coupons:read")],
    operation_id="list_coupon_campaigns",
    response_model=Page[Campaign],
    responses=problem_responses(422),
)
async def list_(session: SessionDep, page: PageParamsDep, active: bool | None = None) -> Page[Campaign]:
    return await campaigns.list_campaigns(session, page, active)


@router.get(
    "/v1/coupon-campaigns/{campaign_id}",
    dependencies=[requires("coupons:read")],
    operation_id="get_coupon_campaign",
    response_model=Campaign,
    responses=problem_responses(404, 422),
)
async def get(campaign_id: uuid.UUID, session: SessionDep) -> Campaign:
    return await campaigns.get_campaign(session, campaign_id)


@router.patch(
    "/v1/coupon-campaigns/{campaign_id}",
    dependencies=[requires("coupons:write")],
    operation_id="update_coupon_campaign",
    response_model=Campaign,
    responses=problem_responses(404, 422),
)
async def update(campaign_id: uuid.UUID, body: CampaignPatch, session: SessionDep) -> Campaign:
    return await campaigns.update_campaign(session, campaign_id, body)


@router.post(
    "/v1/coupon-campaigns/{campaign_id}/codes",
    dependencies=[requires("coupons:write")],
    operation_id="generate_coupon_codes",
    status_code=201,
    response_model=CodeJob,
    responses={202: {"description": "A background job was started.", "model": CodeJob}, **problem_responses(404, 422)},
)
async def generate_codes(
    campaign_id: uuid.UUID,
    body: CodesRequest,
    session: SessionDep,
    runtime: RuntimeDep,
    response: Response,
    background: BackgroundTasks,
) -> CodeJob:
    job, done = await codes.request_codes(session, runtime, campaign_id, body)
    response.headers["Location"] = f"/v1/coupon-campaigns/{campaign_id}/code-jobs/{job.id}"
    if not done:
        response.status_code = 202
        # after the response is sent, i.e. after the job row committed
        background.add_task(runtime.wake_jobs)
    return job


@router.get(
    "/v1/coupon-campaigns/{campaign_id}/code-jobs/{job_id}",
    dependencies=[requires("coupons:read")],
    operation_id="get_coupon_code_job",
    response_model=CodeJob,
    responses=problem_responses(404, 422),
)
async def get_code_job(campaign_id: uuid.UUID, job_id: uuid.UUID, session: SessionDep) -> CodeJob:
    return await codes.get_code_job(session, campaign_id, job_id)


@router.post(
    "/v1/coupon-campaigns/{campaign_id}/codes:import",
    dependencies=[requires()],
    operation_id="import_coupon_codes",
    responses=problem_responses(403, 404, 413, 415),
    openapi_extra={"requestBody": {"required": True, "content": IMPORT_MEDIA_TYPES}},
)
async def import_codes(
    campaign_id: uuid.UUID, request: Request, session: SessionDep, runtime: RuntimeDep
) -> ImportReport:
    """Codes printed by another programme, NDJSON or CSV (`code,customer_id,redeemed`)."""
    lines = await parse_lines(request.stream(), request.headers.get("content-type", ""), ImportedCodeLine)
    return await imports.import_codes(session, runtime, campaign_id, lines)


@router.get(
    "/v1/coupon-campaigns/{campaign_id}/codes",
    dependencies=[requires("coupons:read")],
    operation_id="list_coupon_codes",
    response_model=Page[CouponCode],
    responses={200: {"content": {"text/csv": {}}}, **problem_responses(404, 422)},
)
async def list_codes(
    campaign_id: uuid.UUID,
    session: SessionDep,
    page: PageParamsDep,
    request: Request,
    format: Annotated[Literal["json", "csv"], Query(description="`csv` streams every code.")] = "json",
) -> Page[CouponCode] | StreamingResponse:
    if format == "csv":
        await codes.check_campaign_exists(session, campaign_id)
        database = DATABASE.of(request.app)
        return StreamingResponse(
            codes.stream_codes_csv(database.sessionmaker, campaign_id),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="coupon-codes-{campaign_id}.csv"'},
        )
    return await codes.list_codes(session, campaign_id, page)


@router.post(
    "/v1/coupon-campaigns/{campaign_id}/issuances",
    dependencies=[requires("coupons:write")],
    operation_id="issue_coupon",
    status_code=201,
    response_model=Issuance,
    responses=problem_responses(404, 422),
)
async def issue(
    campaign_id: uuid.UUID, body: IssuanceRequest, session: SessionDep, runtime: RuntimeDep, caller: CallerDep
) -> Issuance:
    caller.require_customer(body.customer_id)
    return await issuance.issue_coupon(session, runtime, campaign_id, body)


@router.get(
    "/v1/customers/{customer_id}/coupons",
    dependencies=[requires("coupons:read", customer=True)],
    operation_id="list_customer_coupons",
    response_model=Page[WalletCoupon],
    responses=problem_responses(404, 422),
)
async def customer_wallet(
    customer_id: CustomerIdPath,
    session: SessionDep,
    page: PageParamsDep,
    status: Literal["active", "redeemed", "expired"] | None = None,
) -> Page[WalletCoupon]:
    return await issuance.wallet(session, customer_id, status, page)


@router.post(
    "/v1/coupons/{code}/validation",
    dependencies=[requires("coupons:read", customer=True)],
    operation_id="validate_coupon",
    response_model=ValidationResult,
    responses=problem_responses(404, 422, 429),
)
async def validate(
    code: CodePath, body: ValidationRequest, session: SessionDep, runtime: RuntimeDep, caller: CallerDep
) -> ValidationResult:
    caller.require_customer(body.customer_id)
    return await redemptions.validate(session, runtime, caller, code, body)


@router.post(
    "/v1/coupons/{code}/redemptions",
    dependencies=[requires("coupons:write", customer=True)],
    operation_id="redeem_coupon",
    status_code=201,
    response_model=Redemption,
    responses=problem_responses(404, 409, 422, 429),
)
async def redeem(
    code: CodePath, body: RedemptionRequest, session: SessionDep, runtime: RuntimeDep, caller: CallerDep
) -> Redemption:
    caller.require_customer(body.customer_id)
    return await redemptions.redeem(session, runtime, caller, code, body)


@router.post(
    "/v1/coupon-redemptions/{redemption_id}/rollback",
    dependencies=[requires("coupons:write")],
    operation_id="roll_back_coupon_redemption",
    response_model=Redemption,
    responses=problem_responses(404, 422),
)
async def roll_back(redemption_id: uuid.UUID, session: SessionDep) -> Redemption:
    return await redemptions.roll_back(session, redemption_id)


@router.post(
    "/v1/coupon-rules",
    dependencies=[requires("coupons:write")],
    operation_id="create_coupon_rule",
    status_code=201,
    response_model=Rule,
    responses=problem_responses(404, 422),
)
async def create_rule(body: RuleCreate, session: SessionDep) -> Rule:
    return await rules.create_rule(session, body)


@router.get(
    "/v1/coupon-rules",
    dependencies=[requires("coupons:read")],
    operation_id="list_coupon_rules",
    response_model=Page[Rule],
    responses=problem_responses(422),
)
async def list_rules(session: SessionDep, page: PageParamsDep) -> Page[Rule]:
    return await rules.list_rules(session, page)


@router.get(
    "/v1/coupon-rules/{rule_id}",
    dependencies=[requires("coupons:read")],
    operation_id="get_coupon_rule",
    response_model=Rule,
    responses=problem_responses(404, 422),
)
async def get_rule(rule_id: uuid.UUID, session: SessionDep) -> Rule:
    return await rules.get_rule(session, rule_id)


@router.patch(
    "/v1/coupon-rules/{rule_id}",
    dependencies=[requires("coupons:write")],
    operation_id="update_coupon_rule",
    response_model=Rule,
    responses=problem_responses(404, 422),
)
async def update_rule(rule_id: uuid.UUID, body: RulePatch, session: SessionDep) -> Rule:
    return await rules.update_rule(session, rule_id, body)


# Service to service (the points service's coupon rewards): not in the gateway's route table, not published.
@router.post("/internal/reward-issuances", dependencies=[requires()], include_in_schema=False)
async def issue_for_reward(body: RewardIssuanceRequest, session: SessionDep, runtime: RuntimeDep) -> RewardIssuance:
    return await issuance.issue_for_reward(session, runtime, body)


@router.post("/internal/reward-issuances/{key}/void", dependencies=[requires()], include_in_schema=False)
async def void_reward_issuance(key: uuid.UUID, session: SessionDep) -> RewardIssuance:
    return await issuance.void_reward_issuance(session, key)
