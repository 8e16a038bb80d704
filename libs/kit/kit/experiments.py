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
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from kit.auth import requires
from kit.db import SessionDep, service_router
from kit.errors import Conflict, NotFound
from kit.events import publish

__all__ = [
    "ARMS",
    "EXPERIMENT_REWARD_EVENT",
    "GATEWAY_CONSUMER",
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
EXPERIMENT_REWARD_EVENT = "experiment.reward"
GATEWAY_CONSUMER = "gateway"


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


# ---------------------------------------------------------------- a lever's side: tables

_metadata = MetaData()

experiments = Table(
    "experiments",
    _metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("lever_type", String(32), nullable=False),
    Column("lever_id", String(100), nullable=False),
    Column("holdout_percent", SmallInteger, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True)),
    Column("stopped_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_experiments_lever", "lever_type", "lever_id"),
)

# One row per reward a lever gave or withheld during an experiment, and per cost found later (a coupon's
# discount at redemption): `exposes` says whether the row is the lever firing for the customer.
experiment_rewards = Table(
    "experiment_rewards",
    _metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("experiment_id", UUID(as_uuid=True), nullable=False),
    Column("key", String(200), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("arm", String(9), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("exposes", Boolean, nullable=False),
    Column("withheld", Boolean, nullable=False),
    Column("points", BigInteger),
    Column("money", Numeric(18, 4)),
    Column("currency", String(3)),
    Column("reference", String(100)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_experiment_rewards_key", "experiment_id", "key", unique=True),
    Index("ix_experiment_rewards_reference", "reference", postgresql_where="reference IS NOT NULL"),
)


def add_experiment_tables(metadata: MetaData) -> None:
    """Give a lever-owning service's metadata the experiment tables, so `alembic check` sees them as its own."""
    for table in (experiments, experiment_rewards):
        if table.name not in metadata.tables:
            table.to_metadata(metadata)


def create_experiment_tables(bind: object) -> None:
    """Called from a service's `<service>_experiments` migration (`op.get_bind()`)."""
    _metadata.create_all(bind)  # type: ignore[arg-type]


# ---------------------------------------------------------------- a lever's side: deciding and recording


@dataclass(frozen=True)
class Experiment:
    id: uuid.UUID
    lever_type: str
    lever_id: str
    holdout_percent: int

    def arm(self, customer_id: str) -> Arm:
        return assign_arm(self.id, customer_id, self.holdout_percent)


def _running(at: datetime) -> Any:
    return and_(
        experiments.c.stopped_at.is_(None),
        experiments.c.starts_at <= at,
        or_(experiments.c.ends_at.is_(None), experiments.c.ends_at > at),
    )


async def running_experiment(session: AsyncSession, lever_type: str, lever_id: str, at: datetime) -> Experiment | None:
    """The experiment running on this lever at `at`, the business time of what triggered it (a purchase's
    `occurred_at`), so a replayed history falls in the experiment that covers its dates. Stopping ends it for
    every trigger processed afterwards."""
    row = (
        await session.execute(
            select(experiments.c.id, experiments.c.holdout_percent)
            .where(experiments.c.lever_type == lever_type, experiments.c.lever_id == lever_id, _running(at))
            .order_by(experiments.c.starts_at.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else Experiment(row.id, lever_type, lever_id, row.holdout_percent)


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
    inserted = await session.scalar(
        insert(experiment_rewards)
        .values(
            experiment_id=experiment.id,
            key=key,
            customer_id=customer_id,
            arm=arm,
            occurred_at=occurred_at,
            exposes=exposes,
            withheld=withheld,
            points=points,
            money=money,
            currency=currency,
            reference=reference,
        )
        .on_conflict_do_nothing()
        .returning(experiment_rewards.c.id)
    )
    if inserted is None:
        return False
    payload = {
        "experiment_id": str(experiment.id),
        "customer_id": customer_id,
        "arm": arm,
        "key": key,
        "occurred_at": occurred_at.isoformat(),
        "exposes": exposes,
        "withheld": withheld,
        "points": points,
        "money": None if money is None else str(money),
        "currency": currency,
    }
    await publish(session, EXPERIMENT_REWARD_EVENT, payload, [GATEWAY_CONSUMER])
    return True


async def exposure_by_reference(session: AsyncSession, reference: str) -> tuple[Experiment, str] | None:
    """The experiment (and customer) of the exposure recorded with this `reference`."""
    row = (
        await session.execute(
            select(experiments.c.id, experiments.c.lever_type, experiments.c.lever_id, experiments.c.holdout_percent)
            .add_columns(experiment_rewards.c.customer_id)
            .join(experiment_rewards, experiment_rewards.c.experiment_id == experiments.c.id)
            .where(experiment_rewards.c.reference == reference, experiment_rewards.c.exposes)
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    return Experiment(row.id, row.lever_type, row.lever_id, row.holdout_percent), row.customer_id


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
    payload = {
        "experiment_id": str(experiment_id),
        "customer_id": customer_id,
        "key": key,
        "occurred_at": datetime.now(UTC).isoformat(),
        "exposes": False,
        "withheld": False,
        "points": points,
        "money": None if money is None else str(money),
        "currency": currency,
    }
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"experiment-cost:{experiment_id}:{key}")
    await publish(session, EXPERIMENT_REWARD_EVENT, payload, [GATEWAY_CONSUMER], event_id=event_id)


async def ensure_lever_free(session: AsyncSession, lever_type: str, lever_id: str) -> None:
    """409 `lever_in_experiment` while an experiment that has not been stopped or ended uses this lever."""
    found = await session.scalar(
        select(experiments.c.id)
        .where(
            experiments.c.lever_type == lever_type,
            experiments.c.lever_id == lever_id,
            experiments.c.stopped_at.is_(None),
            or_(experiments.c.ends_at.is_(None), experiments.c.ends_at > func.now()),
        )
        .limit(1)
    )
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
        current = (await session.execute(select(experiments).where(experiments.c.id == experiment_id))).first()
        if current is not None:
            return {"status": "attached"}
        # The gateway attaches only when its registry (the source of truth) has the lever free, so any other live
        # experiment here is an orphan: the gateway's commit failed after an earlier attach. It ends now.
        await session.execute(
            update(experiments)
            .where(
                experiments.c.lever_type == body.lever.type,
                experiments.c.lever_id == body.lever.id,
                experiments.c.stopped_at.is_(None),
            )
            .values(stopped_at=func.now())
        )
        await session.execute(
            insert(experiments).values(
                id=experiment_id,
                lever_type=body.lever.type,
                lever_id=body.lever.id,
                holdout_percent=body.holdout_percent,
                starts_at=body.starts_at,
                ends_at=body.ends_at,
            )
        )
        return {"status": "attached"}

    @router.post("/internal/experiments/{experiment_id}/stop")
    async def stop(experiment_id: uuid.UUID, session: SessionDep) -> dict[str, str]:
        await session.execute(
            update(experiments)
            .where(experiments.c.id == experiment_id, experiments.c.stopped_at.is_(None))
            .values(stopped_at=func.now())
        )
        return {"status": "stopped"}

    return router
