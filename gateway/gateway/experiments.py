"""Experiments on the levers: the gateway owns them (docs/experiments.md).

- Creating one writes it here and attaches it, in the same request, to the service that owns the lever
  (`PUT /internal/experiments/{id}` there): that service decides arms with :func:`kit.experiments.assign_arm`,
  gives or withholds, and reports each reward as an `experiment.reward` event (:func:`on_reward`).
- Results come from :mod:`gateway.experiment_repository` (aggregates in SQL) and
  :mod:`gateway.experiment_stats` (the tests).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import experiment_repository as repo
from gateway.experiment_repository import ExperimentRecord
from gateway.experiment_schemas import (
    ArmResult,
    CostPerExtraCustomer,
    Experiment,
    ExperimentCreate,
    ExperimentStatus,
    Lever,
    LiftResult,
    Lifts,
    Results,
)
from gateway.experiment_stats import Lift, two_proportions, welch
from kit.client import UpstreamError, Upstreams
from kit.contracts import ExperimentReward
from kit.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable
from kit.events import Event, EventHandler, Handler
from kit.experiments import Arm, assign_arm

__all__ = ["LEVER_SERVICES", "create", "get", "handlers", "report", "status_of", "stop"]

log = structlog.get_logger("gateway.experiments")

# Which service owns each kind of lever.
LEVER_SERVICES: dict[str, str] = {
    "coupon_rule": "coupon",
    "bonus_campaign": "points",
    "survey_reward": "survey",
    "reward": "coupon",  # a gift rule: the surprise rules live in the coupon service
}
CENT = Decimal("0.01")


def status_of(row: ExperimentRecord, now: datetime | None = None) -> ExperimentStatus:
    if row.stopped_at is not None:
        return "stopped"
    if row.ends_at is not None and row.ends_at <= (now or datetime.now(UTC)):
        return "ended"
    return "running"


def to_model(row: ExperimentRecord) -> Experiment:
    return Experiment(
        id=row.id,
        name=row.name,
        lever=Lever(type=row.lever_type, id=row.lever_id),
        holdout_percent=row.holdout_percent,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        stopped_at=row.stopped_at,
        status=status_of(row),
        created_at=row.created_at,
    )


async def _call(upstreams: Upstreams, service: str, method: str, path: str, body: Any = None) -> None:
    """A call to the lever's service; its refusals become ours, its absence a 503 (and nothing is stored)."""
    if service not in upstreams.urls:
        raise ServiceUnavailable(f"The {service} service is not configured.", code="upstream_unavailable")
    try:
        response = await upstreams.call(service, method, path, json=body)
    except UpstreamError as exc:
        log.warning("experiments.lever_unreachable", service=service, error=str(exc)[:200])
        raise ServiceUnavailable(
            f"The {service} service did not answer; nothing was changed. Retry shortly.",
            code="upstream_unavailable",
            headers={"Retry-After": "1"},
        ) from None
    if response.status < 300:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    detail = str(problem.get("detail") or f"The {service} service answered {response.status}.")
    if response.status == 404:
        raise Unprocessable(detail, code="lever_not_found")
    if response.status == 409:
        raise Conflict(detail, code=str(problem.get("code") or "lever_in_experiment"))
    log.warning("experiments.lever_refused", service=service, status=response.status, detail=detail[:200])
    raise ServiceUnavailable(
        f"The {service} service could not attach the experiment; nothing was changed.",
        code="upstream_unavailable",
        headers={"Retry-After": "1"},
    )


async def create(session: AsyncSession, upstreams: Upstreams, body: ExperimentCreate) -> Experiment:
    service = LEVER_SERVICES[body.lever.type]
    await repo.close_ended(session, body.lever.type, body.lever.id)
    running = await repo.live_on_lever(session, body.lever.type, body.lever.id)
    if running is not None:
        raise Conflict(
            "Another experiment runs on this lever; stop it first.",
            code="lever_in_experiment",
            experiment_id=str(running),
        )
    experiment_id = uuid.uuid4()
    starts_at = body.starts_at or datetime.now(UTC)
    if body.ends_at is not None and body.ends_at <= starts_at:
        raise Unprocessable("ends_at must be after starts_at.", code="validation_error")
    row = await repo.insert_experiment(
        session,
        {
            "id": experiment_id,
            "name": body.name,
            "lever_type": body.lever.type,
            "lever_id": body.lever.id,
            "holdout_percent": body.holdout_percent,
            "starts_at": starts_at,
            "ends_at": body.ends_at,
        },
    )
    if row is None:
        raise Conflict("Another experiment runs on this lever; stop it first.", code="lever_in_experiment")
    # Last, so that a refusal leaves nothing here (the request's transaction rolls back); the call is idempotent
    # by the experiment's id.
    attachment = {
        "lever": {"type": body.lever.type, "id": body.lever.id},
        "holdout_percent": body.holdout_percent,
        "starts_at": starts_at.isoformat(),
        "ends_at": body.ends_at.isoformat() if body.ends_at else None,
    }
    await _call(upstreams, service, "PUT", f"/internal/experiments/{experiment_id}", attachment)
    log.info("experiments.created", experiment_id=str(experiment_id), lever=body.lever.type, lever_id=body.lever.id)
    return to_model(row)


async def _row(session: AsyncSession, experiment_id: uuid.UUID, *, lock: bool = False) -> Any:
    row = await repo.get(session, experiment_id, lock=lock)
    if row is None:
        raise NotFound("No experiment with this id.", code="experiment_not_found")
    return row


async def get(session: AsyncSession, experiment_id: uuid.UUID) -> Experiment:
    return to_model(await _row(session, experiment_id))


async def stop(session: AsyncSession, upstreams: Upstreams, experiment_id: uuid.UUID) -> Experiment:
    """Idempotent: stopping a stopped experiment answers it as it is."""
    row = await _row(session, experiment_id, lock=True)
    if row.stopped_at is None:
        service = LEVER_SERVICES[row.lever_type]
        await _call(upstreams, service, "POST", f"/internal/experiments/{experiment_id}/stop")
        await repo.stop(session, experiment_id)
        row = await _row(session, experiment_id)
        log.info("experiments.stopped", experiment_id=str(experiment_id))
    return to_model(row)


async def assignment(session: AsyncSession, experiment_id: uuid.UUID, customer_id: str) -> Arm:
    row = await _row(session, experiment_id)
    return assign_arm(row.id, customer_id, row.holdout_percent)


def _lift(lift: Lift | None) -> LiftResult | None:
    if lift is None:
        return None
    return LiftResult(
        absolute=round(lift.absolute, 6),
        relative=None if lift.relative is None else round(lift.relative, 6),
        ci95=(round(lift.ci95[0], 6), round(lift.ci95[1], 6)),
        p_value=None if lift.p_value is None else round(lift.p_value, 6),
        significant=lift.significant,
        method=lift.method,
    )


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def conclusion(repeat: Lift | None, revenue: Lift | None) -> str:
    if repeat is None:
        return "Not enough exposed customers in both arms to compare yet."
    parts = []
    for label, lift in (("repeat rate", repeat), ("revenue per customer", revenue)):
        if lift is None or lift.p_value is None:
            continue
        if lift.significant:
            direction = "higher" if lift.absolute > 0 else "lower"
            parts.append(f"{label} is significantly {direction} with the reward (p = {lift.p_value:.3g})")
        else:
            parts.append(f"no significant lift in {label} (p = {lift.p_value:.3g})")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


async def report(session: AsyncSession, experiment_id: uuid.UUID, window_days: int) -> Results:
    row = await _row(session, experiment_id)
    aggregates = await repo.arm_aggregates(session, experiment_id, window_days)
    t, h = aggregates["treatment"], aggregates["holdout"]
    repeat = two_proportions(t.returned, t.exposed, h.returned, h.exposed)
    revenue = welch(
        t.exposed, float(t.revenue), float(t.revenue_squares), h.exposed, float(h.revenue), float(h.revenue_squares)
    )
    arms = {
        arm: ArmResult(
            customers_exposed=a.exposed,
            customers_returned=a.returned,
            repeat_rate=round(a.returned / a.exposed, 6) if a.exposed else 0.0,
            purchases=a.purchases,
            revenue=_money(a.revenue),
            revenue_per_customer=_money(a.revenue / a.exposed) if a.exposed else Decimal("0.00"),
            reward_cost_points=a.cost_points,
            reward_cost_money=_money(a.cost_money),
            rewards_given=a.given,
            rewards_withheld=a.withheld,
        )
        for arm, a in aggregates.items()
    }
    extra = repeat.absolute * t.exposed if repeat is not None else 0.0
    cost = CostPerExtraCustomer(
        extra_returning_customers=round(extra, 3),
        points=round(t.cost_points / extra, 3) if extra > 0 else None,
        money=_money(t.cost_money / Decimal(str(extra))) if extra > 0 else None,
    )
    return Results(
        experiment_id=experiment_id,
        status=status_of(row),
        window_days=window_days,
        arms=arms,  # type: ignore[arg-type]
        lift=Lifts(repeat_rate=_lift(repeat), revenue_per_customer=_lift(revenue)),
        cost_per_extra_returning_customer=cost,
        conclusion=conclusion(repeat, revenue),
    )


async def on_reward(session: AsyncSession, event: Event[ExperimentReward]) -> None:
    """A lever gave or withheld a reward (or a given coupon was redeemed), at the event's business time. The
    arm is recomputed here: what the gateway reports never depends on what a service said it was."""
    reward = event.payload
    row = await repo.get(session, reward.experiment_id)
    if row is None:
        log.warning("experiments.reward_unknown_experiment", experiment_id=str(reward.experiment_id))
        return
    await repo.add_reward(
        session,
        {
            "experiment_id": reward.experiment_id,
            "key": reward.key,
            "customer_id": reward.customer_id,
            "arm": assign_arm(row.id, reward.customer_id, row.holdout_percent),
            "occurred_at": event.occurred_at,
            "exposes": reward.exposes,
            "withheld": reward.withheld,
            "points": reward.points,
            "money": reward.money,
            "currency": reward.currency,
        },
    )


def handlers() -> dict[str, EventHandler]:
    return {ExperimentReward.type: Handler(ExperimentReward, on_reward)}
