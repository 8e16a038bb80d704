"""The training side, run by the recommend workers (PROCESS_ROLE worker or all): train at start when the history
changed since the newest stored model, on a schedule when it changed, and for every training request recorded
through the API (`training_requests`, announced on the channel `recommend_training`; polled too, should a notice be
missed). Models go into the `models` table; the api replicas load the newest (recommend.engine).

Exactly one worker trains at a time: a PostgreSQL advisory lock held on the training's own connection. Training
itself runs in a child process (or a thread, by setting): the worker's loop keeps answering its probes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime

import asyncpg
import structlog
from threadpoolctl import threadpool_limits

from recommend import repository
from recommend.model import Model, Params
from recommend.store import loads
from recommend.training import Connection, train_from_database

__all__ = ["MODELS_KEPT", "TRAINING_LOCK", "Trainer"]

log = structlog.get_logger("recommend.trainer")
TRAINING_LOCK = 0x7265636F6D6D656E  # "recommen": one advisory lock key for the service's training
MODELS_KEPT = 3

Installer = Callable[[Model, float | None], Awaitable[None]]


class Trainer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        connection: Connection,
        *,
        subprocess: bool = True,
        params: Params = Params(),
        tuning_budget_seconds: float = 30.0,
        name: str = "recommend",
        install: Installer | None = None,
    ) -> None:
        self.pool = pool
        self.connection = connection
        self.name = name  # which worker: recorded with each model it trains
        self.params = params  # where the tuner starts from
        self.tuning_budget_seconds = tuning_budget_seconds
        self.install = install  # PROCESS_ROLE all: the same process serves the model it trained at once
        self._training: asyncio.Task[None] | None = None
        self._again = False
        self._subprocess = subprocess
        self._executor = self._new_executor()
        self._listener: asyncpg.Connection | None = None
        self._attempted = 0  # the newest request version a training started for (a failed one is not retried at once)
        self.last_training_seconds: float | None = None
        self.trained_interactions = -1  # those of the newest stored model

    def _new_executor(self) -> Executor:
        if self._subprocess:
            return ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_background_priority
            )
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="recommend-train")

    async def start(self) -> None:
        """Listen for requests, then train when the history changed since the newest stored model (an empty
        history and no model: nothing to train) or a request waits."""
        self.trained_interactions = await self._stored_interactions()
        await self.listen()
        if await repository.interaction_count(self.pool) != max(self.trained_interactions, 0):
            self.request_training(await repository.new_model_version(self.pool))
        else:
            await self.take_requests()

    async def close(self) -> None:
        if self._training:
            self._training.cancel()
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _stored_interactions(self) -> int:
        value = await repository.stored_interactions(self.pool)
        return -1 if value is None else value

    # -- requests ------------------------------------------------------------------------------------------
    async def listen(self) -> None:
        """LISTEN on a connection of its own, straight to the database (a pooler in transaction mode would drop
        it between transactions); the poll job calls this again after the connection was lost."""
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = await self.connection.connect()
        await self._listener.add_listener(repository.TRAINING_CHANNEL, self._notified)

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.isdigit() and int(payload) > self._attempted:
            self.request_training(int(payload))

    async def take_requests(self) -> None:
        """Train for the newest request when no stored model covers it (the poll, beside the notices)."""
        stored, requested = await repository.training_state(self.pool)
        if requested > stored and requested > self._attempted:
            self.request_training(requested)

    async def poll(self) -> None:
        try:
            await self.listen()
        finally:
            await self.take_requests()

    async def retrain_if_new(self) -> None:
        """The schedule: train when interactions came or went since the newest stored model."""
        self.trained_interactions = max(self.trained_interactions, await self._stored_interactions())
        count = await repository.interaction_count(self.pool)
        if count != max(self.trained_interactions, 0) and not self.training:
            self.request_training(await repository.new_model_version(self.pool))

    # -- training ------------------------------------------------------------------------------------------
    @property
    def training(self) -> bool:
        return self._training is not None and not self._training.done()

    def request_training(self, version: int) -> None:
        """Start training unless it is running; a request during a run schedules one more run after it."""
        if self.training:
            self._again = True
            return
        self._training = asyncio.create_task(self._train(version), name="recommend.train")

    async def _train(self, version: int) -> None:
        while True:
            try:
                await self._train_once(version)
            except asyncio.CancelledError:
                raise
            except BrokenExecutor:
                # the training child died (killed, out of memory): the next run gets a new one
                log.exception("recommend.training_process_lost", version=version)
                self._executor = self._new_executor()
                return
            except Exception:
                log.exception("recommend.training_failed", version=version)
                return
            if not self._again:
                return
            self._again = False
            version = await repository.new_model_version(self.pool)

    async def _train_once(self, version: int) -> None:
        """Train under the training lock, unless a model already stored covers this request.

        The trainer stores under the sequence's latest value, which every request made before it started has
        reserved: a worker that waited for the lock finds the model the other just stored and trains nothing."""
        self._attempted = max(self._attempted, version)
        conn = await self.connection.connect()
        try:
            await repository.take_training_lock(conn, TRAINING_LOCK)
            latest = await repository.latest_model_version(conn)
            if latest is not None and latest >= version:
                self.trained_interactions = await self._stored_interactions()
                return
            version = max(version, await repository.reserved_model_version(conn))
            self._attempted = max(self._attempted, version)
            started_at = datetime.now(UTC)
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            blob = await loop.run_in_executor(
                self._executor,
                train_from_database,
                self.connection,
                version,
                self.params,
                self.tuning_budget_seconds,
            )
            model = await asyncio.to_thread(loads, blob)
            await repository.store_model(conn, version, self.name, started_at, model.interactions, blob, MODELS_KEPT)
        finally:
            await conn.close()  # releases the lock, also when cancelled or failed
        self.trained_interactions = model.interactions
        self.last_training_seconds = time.perf_counter() - started
        if self.install is not None:
            await self.install(model, self.last_training_seconds)
        log.info(
            "recommend.model_trained",
            version=model.version,
            seconds=round(self.last_training_seconds, 2),
            customers=model.customers,
            products=model.products,
        )


def _background_priority() -> None:
    """The training child yields the CPU to the rest of the machine, and uses one BLAS thread (2-core machines)."""
    os.nice(10)
    threadpool_limits(1)
