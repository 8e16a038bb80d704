"""The one statement that claims due rows of a queue table under a lease (see :mod:`kit.leases`).

A queue table has an `id` and a `next_attempt_at`; its rows wait until that time. A claim is one UPDATE: the
due rows are picked with `FOR UPDATE SKIP LOCKED` (workers in any number of replicas share the work and none
waits for another) and their `next_attempt_at` moves one lease ahead, which is the whole lease: nothing else is
marked, so rows whose worker died are due again when the lease runs out. The worker then records each outcome
itself (done, or due again after a backoff).

A caller describes its queue once (:class:`DueRows`, in its own repository module, with the dataclass of its
claimed rows) and claims with :func:`claim_due`. The claimed row is `d` in every fragment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = ["DueRows", "claim_due"]

T = TypeVar("T")


@dataclass(frozen=True)
class DueRows:
    """A queue table and what a claim of its due rows gives back.

    - `waiting`: the rows that wait for their turn (a due one is also `next_attempt_at <= now()`);
    - `order_by`: which due rows go first (`LIMIT :batch` of them);
    - `returning`: the claim's columns, of `d` and of the `joins` (other tables, for the claimed rows' context);
    - `also_set`: more assignments made by the claim itself (an attempt counter);
    - `chosen`: a caller's own choice of rows instead of the first `:batch` due ones in `order_by` (lanes kept in
      order, budgets per endpoint): a query of ids whose rows it locks `FOR UPDATE SKIP LOCKED`, after the CTEs of
      `prelude`. The caller's extra parameters are passed to :func:`claim_due`.
    """

    table: str
    returning: str
    waiting: str = "d.status = 'pending'"
    order_by: str = "d.next_attempt_at"
    joins: Mapping[str, str] = field(default_factory=dict)  # `table AS alias` -> its join condition
    also_set: str = ""
    prelude: str = ""
    chosen: str = ""

    @cached_property
    def statement(self) -> TextClause:
        chosen = self.chosen or (
            f"SELECT id FROM {self.table} AS d WHERE {self.waiting} AND d.next_attempt_at <= now()"
            f" ORDER BY {self.order_by} LIMIT :batch FOR UPDATE SKIP LOCKED"
        )
        sets = "next_attempt_at = now() + make_interval(secs => :lease)" + (
            f", {self.also_set}" if self.also_set else ""
        )
        joined = "".join(f" AND {condition}" for condition in self.joins.values())
        return text(
            f"{self.prelude}\n"
            f"UPDATE {self.table} AS d SET {sets}\n"
            + (f"  FROM {', '.join(self.joins)}\n" if self.joins else "")
            + f" WHERE d.id IN ({chosen}){joined}\n"
            f"RETURNING {self.returning}"
        )


async def claim_due(
    executor: AsyncSession | AsyncConnection,
    queue: DueRows,
    into: Callable[..., T],
    *,
    batch: int,
    lease_seconds: float,
    **params: Any,
) -> list[T]:
    """Claim up to `batch` due rows of `queue` for `lease_seconds`, in the executor's transaction (commit it
    before working on them, or other workers wait on the locks instead of skipping them). Each row is built
    as `into(**columns)`: a frozen dataclass whose fields are the `returning` columns."""
    result = await executor.execute(queue.statement, {"batch": batch, "lease": lease_seconds, **params})
    return [into(**row._mapping) for row in result]
