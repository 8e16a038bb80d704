"""The SQL of a lever's side of experiments (`kit.experiments`): which experiment runs on a lever, the rewards
recorded under one, and the attachments the gateway makes and stops."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ColumnElement, Table, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kit.experiment_tables import experiment_rewards, experiments

__all__ = [
    "ExperimentRow",
    "Exposure",
    "RewardRow",
    "attached",
    "exposure_by_reference",
    "insert_experiment",
    "insert_reward",
    "live_on_lever",
    "running_on_lever",
    "stop",
    "stop_live_on_lever",
    "unstopped_on_lever",
]


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    id: uuid.UUID
    lever_type: str
    lever_id: str
    holdout_percent: int


@dataclass(frozen=True, slots=True)
class Exposure:
    experiment: ExperimentRow
    customer_id: str


@dataclass(frozen=True, slots=True)
class RewardRow:
    experiment_id: uuid.UUID
    key: str
    customer_id: str
    arm: str
    occurred_at: datetime
    exposes: bool
    withheld: bool
    points: int | None
    money: Decimal | None
    currency: str | None
    reference: str | None


def unstopped_on_lever(table: Table, lever_type: str, lever_id: str) -> ColumnElement[bool]:
    """The experiments on this lever not stopped yet, in a table of experiments: a service's (`experiments` here)
    or the gateway's registry, which share these columns."""
    return and_(table.c.lever_type == lever_type, table.c.lever_id == lever_id, table.c.stopped_at.is_(None))


_EXPERIMENT_COLUMNS = (
    experiments.c.id,
    experiments.c.lever_type,
    experiments.c.lever_id,
    experiments.c.holdout_percent,
)


async def running_on_lever(session: AsyncSession, lever_type: str, lever_id: str, at: datetime) -> ExperimentRow | None:
    """The latest-started experiment on the lever that is neither stopped nor outside its dates at `at`."""
    row = (
        await session.execute(
            select(*_EXPERIMENT_COLUMNS)
            .where(
                unstopped_on_lever(experiments, lever_type, lever_id),
                experiments.c.starts_at <= at,
                or_(experiments.c.ends_at.is_(None), experiments.c.ends_at > at),
            )
            .order_by(experiments.c.starts_at.desc())
            .limit(1)
        )
    ).first()
    return ExperimentRow(**row._mapping) if row else None


async def insert_reward(session: AsyncSession, reward: RewardRow) -> bool:
    """False when this experiment already has a reward with this key."""
    inserted = await session.scalar(
        insert(experiment_rewards).values(**asdict(reward)).on_conflict_do_nothing().returning(experiment_rewards.c.id)
    )
    return inserted is not None


async def exposure_by_reference(session: AsyncSession, reference: str) -> Exposure | None:
    row = (
        await session.execute(
            select(*_EXPERIMENT_COLUMNS, experiment_rewards.c.customer_id)
            .join(experiment_rewards, experiment_rewards.c.experiment_id == experiments.c.id)
            .where(experiment_rewards.c.reference == reference, experiment_rewards.c.exposes)
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    return Exposure(ExperimentRow(row.id, row.lever_type, row.lever_id, row.holdout_percent), row.customer_id)


async def live_on_lever(session: AsyncSession, lever_type: str, lever_id: str) -> uuid.UUID | None:
    """An experiment on the lever that is neither stopped nor past its end (one not started yet counts)."""
    return await session.scalar(
        select(experiments.c.id)
        .where(
            unstopped_on_lever(experiments, lever_type, lever_id),
            or_(experiments.c.ends_at.is_(None), experiments.c.ends_at > func.now()),
        )
        .limit(1)
    )


async def attached(session: AsyncSession, experiment_id: uuid.UUID) -> bool:
    found = await session.scalar(select(experiments.c.id).where(experiments.c.id == experiment_id))
    return found is not None


async def stop_live_on_lever(session: AsyncSession, lever_type: str, lever_id: str) -> None:
    await session.execute(
        update(experiments).where(unstopped_on_lever(experiments, lever_type, lever_id)).values(stopped_at=func.now())
    )


async def insert_experiment(
    session: AsyncSession,
    experiment: ExperimentRow,
    starts_at: datetime,
    ends_at: datetime | None,
) -> None:
    await session.execute(insert(experiments).values(**asdict(experiment), starts_at=starts_at, ends_at=ends_at))


async def stop(session: AsyncSession, experiment_id: uuid.UUID) -> None:
    """Stopping twice keeps the first time."""
    await session.execute(
        update(experiments)
        .where(experiments.c.id == experiment_id, experiments.c.stopped_at.is_(None))
        .values(stopped_at=func.now())
    )
