"""`/v1/experiments`: the gateway's own routes for experiments (admin only, decided by the front door)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import Query

from gateway import experiment_repository, experiments
from gateway.api import PrincipalDep
from gateway.experiment_schemas import Assignment, Experiment, ExperimentCreate, ExperimentStatus, Results
from gateway.state import UpstreamsDep
from kit.db import SessionDep, service_router
from kit.errors import problem_responses
from kit.pagination import Page, PageParamsDep, paginate
from kit.types import CustomerIdPath

router = service_router(responses=problem_responses(401, 403, 422, 429), tags=["experiments"])


@router.post(
    "/v1/experiments", status_code=201, operation_id="create_experiment", responses=problem_responses(409, 503)
)
async def create_experiment(
    body: ExperimentCreate, upstreams: UpstreamsDep, session: SessionDep, _: PrincipalDep
) -> Experiment:
    """Starts an experiment on one lever: from now on (or `starts_at`), `holdout_percent` of the customers it
    fires for get nothing, and the withholding is recorded as a given reward would be. 409 `lever_in_experiment`
    while another experiment runs on the lever; 422 `lever_not_found`."""
    return await experiments.create(session, upstreams, body)


@router.get("/v1/experiments", operation_id="list_experiments")
async def list_experiments(
    session: SessionDep,
    page: PageParamsDep,
    _: PrincipalDep,
    status: Annotated[ExperimentStatus | None, Query(description="Only experiments in this state.")] = None,
) -> Page[Experiment]:
    rows, next_cursor = paginate(
        await experiment_repository.list_page(session, status, page.limit, page.after(datetime, UUID)),
        page.limit,
        key=lambda r: (r.created_at.isoformat(), str(r.id)),
    )
    return Page[Experiment](items=[experiments.to_model(r) for r in rows], next_cursor=next_cursor)


@router.get("/v1/experiments/{experiment_id}", operation_id="get_experiment", responses=problem_responses(404))
async def get_experiment(experiment_id: UUID, session: SessionDep, _: PrincipalDep) -> Experiment:
    return await experiments.get(session, experiment_id)


@router.post(
    "/v1/experiments/{experiment_id}/stop", operation_id="stop_experiment", responses=problem_responses(404, 503)
)
async def stop_experiment(
    experiment_id: UUID, upstreams: UpstreamsDep, session: SessionDep, _: PrincipalDep
) -> Experiment:
    """The lever gives to everyone again; the results stay available. Stopping twice changes nothing."""
    return await experiments.stop(session, upstreams, experiment_id)


@router.get(
    "/v1/experiments/{experiment_id}/assignments/{customer_id}",
    operation_id="get_experiment_assignment",
    responses=problem_responses(404),
)
async def get_experiment_assignment(
    experiment_id: UUID, customer_id: CustomerIdPath, session: SessionDep, _: PrincipalDep
) -> Assignment:
    arm = await experiments.assignment(session, experiment_id, customer_id)
    return Assignment(experiment_id=experiment_id, customer_id=customer_id, arm=arm)


@router.get(
    "/v1/experiments/{experiment_id}/results",
    operation_id="get_experiment_results",
    responses=problem_responses(404),
)
async def get_experiment_results(
    experiment_id: UUID,
    session: SessionDep,
    _: PrincipalDep,
    window_days: Annotated[int, Query(ge=1, le=365, description="Days after exposure that count.")] = 30,
) -> Results:
    """Per arm: exposed, returned within the window, repeat rate, purchases, revenue, revenue per customer and what
    the rewards cost; the lift in repeat rate (two-proportion z-test) and in revenue per customer (Welch's t-test),
    each with a 95% interval and a p-value; the cost per extra returning customer."""
    return await experiments.report(session, experiment_id, window_days)
