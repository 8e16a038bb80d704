"""Experiments on the levers: which arm a customer is in, and how a lever records what it gave or withheld.

- :func:`assign_arm` is the one place that decides a customer's arm: the first 4 bytes of
  SHA-256(`"{experiment_id}:{customer_id}"`), modulo 100, below `holdout_percent` means `holdout`. Every process
  computes the same arm with no call and no shared state, whatever its hash seed, and PostgreSQL can compute the
  same thing (:func:`arm_sql`), which the benchmarks and the A/A tests use to build millions of exposures in SQL.
- A service that owns levers keeps the experiments attached to them (:data:`experiments`, written by the
  gateway through :func:`experiments_router`) and a record of every reward its levers gave or withheld during
  one (:data:`experiment_rewards`). :func:`record` writes that record and, in the same transaction, publishes an
  `experiment.reward` event to the gateway, which owns the results.
- A withheld reward is recorded exactly as a given one: same trigger key, same business time, same amount.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from kit import experiment_repository as repository
from kit.auth import requires
from kit.contracts import ExperimentReward
from kit.db import SessionDep, service_router
from kit.errors import Conflict, NotFound
from kit.events import publish
from kit.experiment_repository import ExperimentRow, RewardRow
from kit.experiment_tables import add_experiment_tables, create_experiment_tables, experiment_rewards, experiments

__all__ = [
    "ARMS",
    "LEVER_TYPES",
    "Arm",
    "Attachment",
    "Experiment",
    "LeverExists",
    "LeverType",
    "add_experiment_tables",
    "arm_sql",
    "assign_arm",
    "bucket",
    "create_experiment_tables",
    "ensure_lever_free",
    "experiment_rewards",
    "experiments",
    "experiments_router",
    "record",
    "record_follow_up",
    "report_cost",
    "running_experiment",
]

Arm = Literal["treatment", "holdout"]
ARMS: tuple[Arm, Arm] = ("treatment", "holdout")
LeverType = Literal["coupon_rule", "bonus_campaign", "survey_reward", "reward"]
LEVER_TYPES: tuple[LeverType, ...] = ("coupon_rule", "bonus_campaign", "survey_reward", "reward")
BUCKETS = 100


def bucket(experiment_id: uuid.UUID | str, customer_id: str) -> int:
    """0-99, uniform, fixed forever for this pair."""
    digest = hashlib.sha256(f"{str(experiment_id).lower()}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % BUCKETS


def assign_arm(experiment_id: uuid.UUID | str, customer_id: str, holdout_percent: int) -> Arm:
    return "holdout" if bucket(experiment_id, customer_id) < holdout_percent else "treatment"


def arm_sql(experiment_id: str, customer_id: str, holdout_percent: str) -> str:
    """The same decision as :func:`assign_arm`, as a PostgreSQL expression over three SQL expressions
    (a uuid or text, a text, an integer)."""
    digest = f"sha256(convert_to(({experiment_id})::text || ':' || ({customer_id}), 'UTF8'))"
    number = f"('x' || encode(substring({digest} FROM 1 FOR 4), 'hex'))::bit(32)::bigint"
    return f"CASE WHEN ({number}) % {BUCKETS} < ({holdout_percent}) THEN 'holdout' ELSE 'treatment' END"


# ---------------------------------------------------------------- a lever's side: deciding and recording


@dataclass(frozen=True, slots=True)
class Experiment(ExperimentRow):
    def arm(self, customer_id: str) -> Arm:
        return assign_arm(self.id, customer_id, self.holdout_percent)


async def running_experiment(session: AsyncSession, lever_type: str, lever_id: str, at: datetime) -> Experiment | None:
    """The experiment running on this lever at `at`, the business time of what triggered it (a purchase's
    `occurred_at`), so a replayed history falls in the experiment that covers its dates. Stopping ends it for
    every trigger processed afterwards."""
    row = await repository.running_on_lever(session, lever_type, lever_id, at)
    return None if row is None else Experiment(row.id, row.lever_type, row.lever_id, row.holdout_percent)


async def record(
    session: AsyncSession,
    experiment: Experiment,
    customer_id: str,
    *,
    key: str,
    occurred_at: datetime,
    withheld: bool,
    exposes: bool = True,
    points: int | None = None,
    money: Decimal | None = None,
    currency: str | None = None,
    reference: str | None = None,
) -> bool:
    """Record a reward given or withheld (once per experiment and `key`) and tell the gateway, in the
    caller's transaction. Answers False when this key was recorded before (a redelivered event)."""
    arm = experiment.arm(customer_id)
    row = RewardRow(
        experiment.id, key, customer_id, arm, occurred_at, exposes, withheld, points, money, currency, reference
    )
    if not await repository.insert_reward(session, row):
        return False
    reward = ExperimentReward(
        experiment_id=experiment.id,
        customer_id=customer_id,
        arm=arm,
        key=key,
        exposes=exposes,
        withheld=withheld,
        points=points,
        money=money,
        currency=currency,
    )
    await publish(session, reward, occurred_at=occurred_at)
    return True


async def exposure_by_reference(session: AsyncSession, reference: str) -> tuple[Experiment, str] | None:
    """The experiment (and customer) of the exposure recorded with this `reference`."""
    found = await repository.exposure_by_reference(session, reference)
    if found is None:
        return None
    row = found.experiment
    return Experiment(row.id, row.lever_type, row.lever_id, row.holdout_percent), found.customer_id


async def record_follow_up(
    session: AsyncSession,
    reference: str,
    key: str,
    *,
    withheld: bool = False,
    points: int | None = None,
    money: Decimal | None = None,
    currency: str | None = None,
) -> None:
    """What followed an exposure known by `reference` (a coupon code given, a survey invitation): its cost (a
    coupon's discount at redemption, a negative amount giving it back; a survey's points on the answer), or the
    same reward withheld. Nothing when that exposure was not under an experiment."""
    found = await exposure_by_reference(session, reference)
    if found is None:
        return
    experiment, customer_id = found
    await record(
        session,
        experiment,
        customer_id,
        key=key,
        occurred_at=datetime.now(UTC),
        exposes=False,
        withheld=withheld,
        points=points,
        money=money,
        currency=currency,
    )


async def report_cost(
    session: AsyncSession,
    experiment_id: uuid.UUID,
    customer_id: str,
    *,
    key: str,
    points: int | None = None,
    money: Decimal | None = None,
    currency: str | None = None,
) -> None:
    """A reward's cost found by a service that does not own the lever (the points service granting a gift rule's
    catalogue item): told straight to the gateway, once per `key`, in the caller's transaction. Not an exposure;
    the gateway computes the arm itself."""
    reward = ExperimentReward(
        experiment_id=experiment_id,
        customer_id=customer_id,
        key=key,
        exposes=False,
        withheld=False,
        points=points,
        money=money,
        currency=currency,
    )
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"experiment-cost:{experiment_id}:{key}")
    await publish(session, reward, event_id=event_id)


async def ensure_lever_free(session: AsyncSession, lever_type: str, lever_id: str) -> None:
    """409 `lever_in_experiment` while an experiment that has not been stopped or ended uses this lever."""
    found = await repository.live_on_lever(session, lever_type, lever_id)
    if found is not None:
        raise Conflict(
            "An experiment is running on this lever; stop it first (POST /v1/experiments/{id}/stop).",
            code="lever_in_experiment",
            experiment_id=str(found),
        )


# ---------------------------------------------------------------- a lever's side: the gateway attaches experiments

LeverExists = Callable[[AsyncSession, str], Awaitable[bool]]


class _Lever(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: LeverType
    id: Annotated[str, StringConstraints(min_length=1, max_length=100)]


class Attachment(BaseModel):
    """What the gateway tells a lever's service when an experiment starts."""

    model_config = ConfigDict(extra="forbid")
    lever: _Lever
    holdout_percent: Annotated[int, Field(ge=1, le=90, strict=True)]
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None


def experiments_router(levers: Mapping[LeverType, LeverExists]) -> Any:
    """`PUT /internal/experiments/{id}` (attach, idempotent) and `POST /internal/experiments/{id}/stop`, called by
    the gateway only: not in the OpenAPI, not in the gateway's route table."""
    router = service_router(include_in_schema=False, dependencies=[requires()])

    @router.put("/internal/experiments/{experiment_id}")
    async def attach(experiment_id: uuid.UUID, body: Attachment, session: SessionDep) -> dict[str, str]:
        exists = levers.get(body.lever.type)
        if exists is None or not await exists(session, body.lever.id):
            raise NotFound(f"No {body.lever.type} with id {body.lever.id!r}.", code="lever_not_found")
        if await repository.attached(session, experiment_id):
            return {"status": "attached"}
        # The gateway attaches only when its registry (the source of truth) has the lever free, so any other live
        # experiment here is an orphan: the gateway's commit failed after an earlier attach. It ends now.
        await repository.stop_live_on_lever(session, body.lever.type, body.lever.id)
        experiment = ExperimentRow(experiment_id, body.lever.type, body.lever.id, body.holdout_percent)
        await repository.insert_experiment(session, experiment, body.starts_at, body.ends_at)
        return {"status": "attached"}

    @router.post("/internal/experiments/{experiment_id}/stop")
    async def stop(experiment_id: uuid.UUID, session: SessionDep) -> dict[str, str]:
        await repository.stop(session, experiment_id)
        return {"status": "stopped"}

    return router
