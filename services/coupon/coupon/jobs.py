"""The background worker that runs large code generation jobs.

A job is claimed with `FOR UPDATE SKIP LOCKED` (so replicas share the work) and run in batches; each batch
is its own transaction that stores its codes by COPY and advances the job's and the campaign's counters, so
progress is visible while it runs and a crash loses at most one batch: a job whose heartbeat is older than
`STALE_SECONDS` is claimed again and continues where its last committed batch ended. The next batch is
generated in a thread while the current one is being copied, and two writers COPY at once (PostgreSQL
runs each COPY on one core).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
from sqlalchemy import text

from coupon import repository as repo
from coupon.codes import CodeFormat, generate_bodies
from kit.db import Database, request_driver_connection

log = structlog.get_logger("coupon.jobs")

STALE_SECONDS = 60
POLL_SECONDS = 2.0

_CLAIM = text(
    f"""
    UPDATE code_jobs SET status = 'running', heartbeat_at = now(), started_at = coalesce(started_at, now())
     WHERE id = (SELECT id FROM code_jobs
                  WHERE status = 'pending'
                     OR (status = 'running' AND heartbeat_at < now() - interval '{STALE_SECONDS} seconds')
                  ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id, campaign_id, requested, generated, seq_start
    """
)


class CodeJobRunner:
    def __init__(self, database: Database, batch_size: int, writers: int = 2) -> None:
        self.database = database
        self.batch_size = batch_size
        self.writers = writers
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="coupon.code_jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            try:
                while await self.run_one():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("coupon.jobs.failed")

    async def run_one(self) -> bool:
        """Claim and run one due job; False when there was none."""
        async with self.database.transaction() as session:
            job = (await session.execute(_CLAIM)).first()
            if job is None:
                return False
            campaign = (
                await session.execute(
                    text("SELECT code_prefix, code_length, charset FROM campaigns WHERE id = :id"),
                    {"id": job.campaign_id},
                )
            ).one()
        fmt = CodeFormat(campaign.code_prefix, campaign.code_length, campaign.charset)
        log.info("coupon.jobs.started", job_id=str(job.id), requested=job.requested, done=job.generated)
        try:
            await self._run(job, fmt)
        except Exception as exc:
            log.exception("coupon.jobs.error", job_id=str(job.id))
            async with self.database.transaction() as session:
                await session.execute(
                    text("UPDATE code_jobs SET status = 'failed', error = :error, finished_at = now() WHERE id = :id"),
                    {"id": job.id, "error": f"{type(exc).__name__}: {exc}"[:500]},
                )
        return True

    async def _pending_offsets(self, job: Any) -> list[int]:
        """Batch offsets not yet stored. A batch commits whole, with every sequence number of its range, so
        its first sequence number tells whether it is in (batches commit out of order with two writers)."""
        offsets = list(range(0, int(job.requested), self.batch_size))
        if int(job.generated) == 0:
            return offsets
        async with self.database.transaction() as session:
            connection = await request_driver_connection(session)
            done = {
                offset
                for offset in offsets
                if await connection.fetchval(
                    "SELECT 1 FROM codes WHERE campaign_id = $1 AND seq = $2", job.campaign_id, job.seq_start + offset
                )
            }
        return [offset for offset in offsets if offset not in done]

    async def _run(self, job: Any, fmt: CodeFormat) -> None:
        pending = iter(await self._pending_offsets(job))
        requested = int(job.requested)

        async def writer() -> None:
            # two writers: while one COPY runs in PostgreSQL, the other generates its next batch in a thread
            for offset in pending:
                size = min(self.batch_size, requested - offset)
                bodies = await asyncio.to_thread(generate_bodies, fmt, size)
                await self._store(job.id, job.campaign_id, fmt, bodies, int(job.seq_start) + offset)

        await asyncio.gather(*(writer() for _ in range(self.writers)))
        async with self.database.transaction() as session:
            await session.execute(
                text(
                    "UPDATE code_jobs SET status = 'succeeded', finished_at = now(), heartbeat_at = now() "
                    "WHERE id = :id AND generated = requested"
                ),
                {"id": job.id},
            )
        # Index upkeep, after the codes are in and the job says so: reads by campaign go through the BRIN
        # index, so summarise the new pages now rather than when autovacuum gets to them (until then such
        # reads scan all of them), and give the planner statistics for the rows just added.
        async with self.database.transaction() as session:
            await session.execute(text("SELECT brin_summarize_new_values('ix_codes_campaign_seq')"))
            await session.execute(text("ANALYZE codes"))
        log.info("coupon.jobs.finished", job_id=str(job.id), generated=requested)

    async def _store(
        self,
        job_id: uuid.UUID,
        campaign_id: uuid.UUID,
        fmt: CodeFormat,
        bodies: npt.NDArray[np.uint8],
        seq_start: int,
    ) -> None:
        size = bodies.shape[0]
        async with self.database.transaction() as session:
            connection = await request_driver_connection(session)
            await repo.store_batch(connection, campaign_id, fmt, bodies, seq_start)
            await connection.execute(
                """
                UPDATE code_jobs SET generated = generated + $2, heartbeat_at = now() WHERE id = $1
                """,
                job_id,
                size,
            )
            # last, so the campaign row is locked only for the commit
            await connection.execute("UPDATE campaigns SET generated = generated + $2 WHERE id = $1", campaign_id, size)
