"""The background worker that runs large code generation jobs.

A job is claimed under the kit's lease (kit.leases: `FOR UPDATE SKIP LOCKED`, so replicas share the work) and run
in batches; each batch is its own transaction that stores its codes by COPY, advances the job's and the campaign's
counters and renews the lease, so progress is visible while it runs and a crash loses at most one batch: a job
whose worker stored nothing for `LEASE_SECONDS` is claimed again and continues where its last committed batch
ended. The next batch is
generated in a thread while the current one is being copied, and two writers COPY at once (PostgreSQL
runs each COPY on one core).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import numpy as np
import numpy.typing as npt
import structlog

from coupon.code_format import CodeFormat, generate_bodies
from coupon.repositories import campaigns as campaign_rows
from coupon.repositories import codes as code_rows
from coupon.repositories import jobs as job_rows
from coupon.repositories.jobs import ClaimedJob
from kit.db import Database

log = structlog.get_logger("coupon.jobs")

LEASE_SECONDS = 60  # a job whose worker stored no batch for this long is due again
POLL_SECONDS = 2.0


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
            job = await job_rows.claim_due(session, LEASE_SECONDS)
            if job is None:
                return False
            campaign = await campaign_rows.get(session, job.campaign_id)
            assert campaign is not None  # code_jobs.campaign_id references it
        fmt = campaign.format
        log.info("coupon.jobs.started", job_id=str(job.id), requested=job.requested, done=job.generated)
        try:
            await self._run(job, fmt)
        except Exception as exc:
            log.exception("coupon.jobs.error", job_id=str(job.id))
            async with self.database.transaction() as session:
                await job_rows.mark_failed(session, job.id, f"{type(exc).__name__}: {exc}")
        return True

    async def _pending_offsets(self, job: ClaimedJob) -> list[int]:
        """Batch offsets not yet stored. A batch commits whole, with every sequence number of its range, so
        its first sequence number tells whether it is in (batches commit out of order with two writers)."""
        offsets = list(range(0, job.requested, self.batch_size))
        if job.generated == 0:
            return offsets
        async with self.database.transaction() as session:
            done = await code_rows.present(session, job.campaign_id, [job.seq_start + offset for offset in offsets])
        return [offset for offset in offsets if job.seq_start + offset not in done]

    async def _run(self, job: ClaimedJob, fmt: CodeFormat) -> None:
        pending = iter(await self._pending_offsets(job))
        requested = job.requested

        async def writer() -> None:
            # two writers: while one COPY runs in PostgreSQL, the other generates its next batch in a thread
            for offset in pending:
                size = min(self.batch_size, requested - offset)
                bodies = await asyncio.to_thread(generate_bodies, fmt, size)
                await self._store(job.id, job.campaign_id, fmt, bodies, job.seq_start + offset)

        await asyncio.gather(*(writer() for _ in range(self.writers)))
        async with self.database.transaction() as session:
            await job_rows.mark_succeeded(session, job.id)
        # index upkeep, after the codes are in and the job says so
        async with self.database.transaction() as session:
            await code_rows.summarize(session)
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
            await code_rows.store_batch(session, campaign_id, fmt, bodies, seq_start)
            await job_rows.count_batch(session, job_id, campaign_id, size, LEASE_SECONDS)
