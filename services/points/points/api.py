"""HTTP routes of the points service: thin, each a call into the domain layer."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Request

from kit.auth import requires
from kit.db import SessionDep, service_router
from kit.errors import problem_responses
from kit.imports import IMPORT_MEDIA_TYPES, ImportReport, parse_lines
from kit.pagination import Page, PageParamsDep, encode_cursor
from kit.types import CustomerIdPath
from points import service
from points.schemas import (
    AdjustmentRequest,
    Audit,
    Balance,
    EarningRules,
    EarnRequest,
    ExpiryRun,
    Liability,
    OpeningBalance,
    PointsResult,
    RedemptionRequest,
    ReversalRequest,
    ReversalResult,
    Tier,
    Transaction,
)

router = service_router(tags=["points"])

CUSTOMER = "/v1/customers/{customer_id}/points"


@router.get(
    CUSTOMER,
    dependencies=[requires("points:read", customer=True)],
    operation_id="get_points_balance",
    responses=problem_responses(404, 422),
)
async def get_balance(customer_id: CustomerIdPath, session: SessionDep) -> Balance:
    return await service.balance(session, customer_id)


@router.get(
    CUSTOMER + "/transactions",
    dependencies=[requires("points:read", customer=True)],
    operation_id="list_points_transactions",
    responses=problem_responses(404, 422),
)
async def list_transactions(customer_id: CustomerIdPath, session: SessionDep, page: PageParamsDep) -> Page[Transaction]:
    """Newest first."""
    items, last_id = await service.transactions(session, customer_id, page.limit, page.after(int))
    return Page[Transaction](items=items, next_cursor=encode_cursor([last_id]) if last_id is not None else None)


@router.post(
    CUSTOMER + "/earn",
    dependencies=[requires("points:write")],
    status_code=201,
    operation_id="earn_points",
    responses=problem_responses(403, 409, 422),
)
async def earn(customer_id: CustomerIdPath, body: EarnRequest, session: SessionDep) -> PointsResult:
    return await service.earn(session, customer_id, body)


@router.post(
    CUSTOMER + "/redemptions",
    dependencies=[requires("points:write", customer=True)],
    status_code=201,
    operation_id="redeem_points",
    responses=problem_responses(404, 409, 422),
)
async def redeem(customer_id: CustomerIdPath, body: RedemptionRequest, session: SessionDep) -> PointsResult:
    return await service.redeem(session, customer_id, body)


@router.post(
    CUSTOMER + "/adjustments",
    dependencies=[requires("points:write")],
    status_code=201,
    operation_id="adjust_points",
    responses=problem_responses(403, 409, 422),
)
async def adjust(customer_id: CustomerIdPath, body: AdjustmentRequest, session: SessionDep) -> PointsResult:
    return await service.adjust(session, customer_id, body)


@router.post(
    CUSTOMER + "/reversals",
    dependencies=[requires("points:write")],
    status_code=201,
    operation_id="reverse_purchase_points",
    responses=problem_responses(403, 404, 409, 422),
)
async def reverse(customer_id: CustomerIdPath, body: ReversalRequest, session: SessionDep) -> ReversalResult:
    return await service.create_reversal(session, customer_id, body)


@router.get("/v1/points/rules", dependencies=[requires("points:read")], operation_id="get_points_earning_rules")
async def get_rules(session: SessionDep) -> EarningRules:
    return await service.get_rules(session)


@router.put(
    "/v1/points/rules",
    dependencies=[requires("points:write")],
    operation_id="replace_points_earning_rules",
    responses=problem_responses(403, 422),
)
async def put_rules(body: EarningRules, session: SessionDep) -> EarningRules:
    return await service.put_rules(session, body)


@router.get("/v1/points/tiers", dependencies=[requires("points:read")], operation_id="list_points_tiers")
async def get_tiers(session: SessionDep) -> list[Tier]:
    return await service.get_tiers(session)


@router.put(
    "/v1/points/tiers",
    dependencies=[requires("points:write")],
    operation_id="replace_points_tiers",
    responses=problem_responses(403, 422),
)
async def put_tiers(tiers: Annotated[list[Tier], Body(max_length=50)], session: SessionDep) -> list[Tier]:
    return await service.put_tiers(session, tiers)


@router.post(
    "/v1/points/expiry-runs",
    dependencies=[requires()],
    status_code=201,
    operation_id="run_points_expiry",
    responses=problem_responses(403, 409),
)
async def run_expiry(session: SessionDep) -> ExpiryRun:
    return await service.run_expiry(session)


@router.post(
    "/v1/points/balances:import",
    dependencies=[requires()],
    operation_id="import_points_balances",
    responses=problem_responses(403, 413, 415),
    openapi_extra={"requestBody": {"required": True, "content": IMPORT_MEDIA_TYPES}},
)
async def import_balances(request: Request, session: SessionDep) -> ImportReport:
    """Opening balances from another programme, NDJSON or CSV (`customer_id,points,reference,expires_at,...`)."""
    lines = await parse_lines(request.stream(), request.headers.get("content-type", ""), OpeningBalance)
    return await service.import_balances(session, lines)


@router.get("/v1/points/liability", dependencies=[requires("points:read")], operation_id="get_points_liability")
async def get_liability(session: SessionDep) -> Liability:
    return await service.liability(session)


@router.get("/v1/points/audit", dependencies=[requires("points:read")], operation_id="audit_points_ledger")
async def get_audit(session: SessionDep) -> Audit:
    return await service.audit(session)
