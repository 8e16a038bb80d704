"""HTTP routes of the rewards catalogue (docs/rewards.md): thin, each a call into `points.rewards`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import BackgroundTasks, Depends, Query, Request, Response

from kit.auth import CallerDep, requires
from kit.db import SessionDep, service_router
from kit.errors import problem_responses
from kit.idempotency import HEADER as IDEMPOTENCY_HEADER
from kit.pagination import Page, PageParamsDep
from kit.state import AppState
from kit.types import CustomerIdPath
from points import rewards
from points.rewards import RewardsRuntime
from points.schemas import (
    CustomerReward,
    Reward,
    RewardCreate,
    RewardPatch,
    RewardRedemption,
    RewardRedemptionRequest,
    RewardRedemptionResult,
)

router = service_router(tags=["rewards"])


REWARDS: AppState[RewardsRuntime] = AppState("rewards")
RuntimeDep = Annotated[RewardsRuntime, Depends(REWARDS)]


@router.post(
    "/v1/rewards",
    dependencies=[requires()],
    status_code=201,
    operation_id="create_reward",
    responses=problem_responses(403, 422, 503),
)
async def create_reward(body: RewardCreate, session: SessionDep, runtime: RuntimeDep) -> Reward:
    return await rewards.create_reward(session, runtime, body)


@router.get(
    "/v1/rewards",
    dependencies=[requires("points:read", customer=True)],
    operation_id="list_rewards",
    responses=problem_responses(422),
)
async def list_rewards(
    session: SessionDep, caller: CallerDep, page: PageParamsDep, active: bool | None = None
) -> Page[Reward]:
    """Cheapest first. A customer token sees the active rewards only."""
    return await rewards.list_rewards(session, caller, active, page)


@router.get(
    "/v1/rewards/{reward_id}",
    dependencies=[requires("points:read", customer=True)],
    operation_id="get_reward",
    responses=problem_responses(404, 422),
)
async def get_reward(reward_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> Reward:
    return await rewards.get_reward(session, reward_id, caller)


@router.patch(
    "/v1/rewards/{reward_id}",
    dependencies=[requires()],
    operation_id="update_reward",
    responses=problem_responses(403, 404, 422, 503),
)
async def update_reward(reward_id: uuid.UUID, body: RewardPatch, session: SessionDep, runtime: RuntimeDep) -> Reward:
    return await rewards.update_reward(session, runtime, reward_id, body)


@router.get("/internal/customers/{customer_id}/overview-parts", dependencies=[requires()], include_in_schema=False)
async def overview_parts(
    customer_id: CustomerIdPath,
    session: SessionDep,
    closest: Annotated[int, Query(ge=1, le=50)] = 3,
) -> dict[str, Any]:
    """The gateway's read model: the overview's two points parts in one request (the balance, the closest rewards)."""
    return await rewards.overview_parts(session, customer_id, closest)


@router.get(
    "/v1/customers/{customer_id}/rewards",
    dependencies=[requires("points:read", customer=True)],
    operation_id="list_customer_rewards",
    responses=problem_responses(404, 422),
)
async def customer_rewards(
    customer_id: CustomerIdPath,
    session: SessionDep,
    page: PageParamsDep,
    affordable: Annotated[bool | None, Query(description="Only those the balance covers (or not).")] = None,
    available: Annotated[bool | None, Query(description="Only those the customer may redeem (or not).")] = None,
) -> Page[CustomerReward]:
    """The active catalogue as this customer sees it, cheapest first."""
    return await rewards.customer_rewards(session, customer_id, affordable, available, page)


@router.post(
    "/v1/customers/{customer_id}/reward-redemptions",
    dependencies=[requires("points:write", customer=True)],
    status_code=201,
    operation_id="redeem_reward",
    responses={
        202: {"description": "Points reserved; the coupon is being issued.", "model": RewardRedemptionResult},
        **problem_responses(404, 409, 422),
    },
)
async def redeem_reward(
    customer_id: CustomerIdPath,
    body: RewardRedemptionRequest,
    runtime: RuntimeDep,
    session: SessionDep,
    request: Request,
    response: Response,
    background: BackgroundTasks,
) -> RewardRedemptionResult:
    keyed = request.headers.get(IDEMPOTENCY_HEADER) is not None  # the route claimed the key in its transaction
    result, status, settle = await rewards.redeem(runtime, customer_id, body, session if keyed else None)
    response.status_code = status
    if settle is not None:
        # after the answer, i.e. after the reservation committed with it
        background.add_task(rewards.settle_one, runtime, settle)
    return result


@router.get(
    "/v1/customers/{customer_id}/reward-redemptions",
    dependencies=[requires("points:read", customer=True)],
    operation_id="list_reward_redemptions",
    responses=problem_responses(404, 422),
)
async def list_reward_redemptions(
    customer_id: CustomerIdPath, session: SessionDep, page: PageParamsDep
) -> Page[RewardRedemption]:
    """Newest first."""
    return await rewards.list_redemptions(session, customer_id, page)


@router.get(
    "/v1/reward-redemptions",
    dependencies=[requires("points:read")],
    operation_id="list_pending_reward_redemptions",
    responses=problem_responses(403, 422),
)
async def list_pending_reward_redemptions(
    session: SessionDep,
    page: PageParamsDep,
    status: Annotated[Literal["pending"], Query(description="Which redemptions: `pending` (items to hand over).")],
) -> Page[RewardRedemption]:
    """Every customer's items waiting to be handed over, newest first: the shop's fulfilment queue."""
    return await rewards.list_pending(session, page)


@router.post(
    "/v1/reward-redemptions/{redemption_id}/fulfilment",
    dependencies=[requires("points:write")],
    operation_id="fulfil_reward_redemption",
    responses=problem_responses(403, 404, 409, 422),
)
async def fulfil(redemption_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> RewardRedemption:
    return await rewards.fulfil(session, caller, redemption_id)


@router.post(
    "/v1/reward-redemptions/{redemption_id}/cancellation",
    dependencies=[requires("points:write", customer=True)],
    operation_id="cancel_reward_redemption",
    responses=problem_responses(404, 409, 422),
)
async def cancel(redemption_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> RewardRedemption:
    """A customer token cancels only its own pending items."""
    return await rewards.cancel(session, caller, redemption_id)
