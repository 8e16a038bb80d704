"""Code generation jobs (`code_jobs`): their rows, and the lease under which the background worker claims one.

A job is claimed through the kit's lease (kit.leases: `FOR UPDATE SKIP LOCKED`, so replicas share the work); each
stored batch renews it, and a running job whose worker stopped renewing is due again and continues where its last
committed batch ended."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.schemas import CodeJob
from kit.db import request_driver_connection
from kit.leases import DueRows
from kit.leases import claim_due as claim_due_rows


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: uuid.UUID
    campaign_id: uuid.UUID
    requested: int
    generated: int
    seq_start: int


JOB_COLUMNS = ", ".join(CodeJob.model_fields)  # a job's row is the API's view of it


def _job(row: Row[Any]) -> CodeJob:
    return CodeJob.model_validate(row._mapping)


_INSERT = text(
    f"""
    INSERT INTO code_jobs (id, campaign_id, requested, generated, seq_start, status, started_at, finished_at)
    VALUES (:id, :campaign_id, :requested, :generated, :seq_start, :status,
            CASE WHEN :done THEN now() END, CASE WHEN :done THEN now() END)
    RETURNING {JOB_COLUMNS}
    """
)


async def insert(
    session: AsyncSession, job_id: uuid.UUID, campaign_id: uuid.UUID, requested: int, seq_start: int, *, done: bool
) -> CodeJob:
    """A job for `requested` codes from `seq_start`: `succeeded` when its codes were stored already, else
    `pending` for the worker."""
    params = {
        "id": job_id,
        "campaign_id": campaign_id,
        "requested": requested,
        "generated": requested if done else 0,
        "seq_start": seq_start,
        "status": "succeeded" if done else "pending",
        "done": done,
    }
    return _job((await session.execute(_INSERT, params)).one())


_GET = text(f"SELECT {JOB_COLUMNS} FROM code_jobs WHERE id = :id AND campaign_id = :campaign_id")


async def get(session: AsyncSession, campaign_id: uuid.UUID, job_id: uuid.UUID) -> CodeJob | None:
    row = (await session.execute(_GET, {"id": job_id, "campaign_id": campaign_id})).first()
    return None if row is None else _job(row)


_LATEST = text(
    f"""
    SELECT DISTINCT ON (campaign_id) {JOB_COLUMNS}
      FROM code_jobs WHERE campaign_id = ANY(:ids) ORDER BY campaign_id, created_at DESC
    """
)


async def latest(session: AsyncSession, campaign_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CodeJob]:
    """Each campaign's latest job (campaigns without one are left out)."""
    rows = await session.execute(_LATEST, {"ids": list(campaign_ids)})
    return {row.campaign_id: _job(row) for row in rows}


# Pending jobs, and running ones whose worker stopped renewing its lease, oldest first.
_DUE = DueRows(
    table="code_jobs",
    waiting="d.status IN ('pending', 'running')",
    order_by="d.created_at",
    also_set="status = 'running', started_at = coalesce(d.started_at, now())",
    returning="d.id, d.campaign_id, d.requested, d.generated, d.seq_start",
)


async def claim_due(session: AsyncSession, lease_seconds: float) -> ClaimedJob | None:
    """The oldest due job, marked running and leased to this worker for `lease_seconds`."""
    rows = await claim_due_rows(session, _DUE, ClaimedJob, batch=1, lease_seconds=lease_seconds)
    return rows[0] if rows else None


_PROGRESS = (
    "UPDATE code_jobs SET generated = generated + $2, next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1"
)
_CAMPAIGN_PROGRESS = "UPDATE campaigns SET generated = generated + $2 WHERE id = $1"


async def count_batch(
    session: AsyncSession, job_id: uuid.UUID, campaign_id: uuid.UUID, size: int, lease_seconds: float
) -> None:
    """A batch of `size` codes is stored: the job's progress (its lease renewed), then the campaign's count (last,
    so the campaign row is locked only for the commit)."""
    connection = await request_driver_connection(session)
    await connection.execute(_PROGRESS, job_id, size, float(lease_seconds))
    await connection.execute(_CAMPAIGN_PROGRESS, campaign_id, size)


_FAILED = text("UPDATE code_jobs SET status = 'failed', error = :error, finished_at = now() WHERE id = :id")
_SUCCEEDED = text(
    "UPDATE code_jobs SET status = 'succeeded', finished_at = now() WHERE id = :id AND generated = requested"
)


async def mark_failed(session: AsyncSession, job_id: uuid.UUID, error: str) -> None:
    await session.execute(_FAILED, {"id": job_id, "error": error[:500]})


async def mark_succeeded(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Succeeded once every code is counted (a job claimed again after its lease ran out may end twice)."""
    await session.execute(_SUCCEEDED, {"id": job_id})
