"""SQL of webhook delivery (:mod:`gateway.webhooks.delivery`): claiming due deliveries per endpoint under a lease,
and recording each attempt's outcome."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from kit.leases import DueRows, claim_due

__all__ = ["Outcome", "abandon", "claim", "disable_failing_since", "failing", "record", "recovered"]


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    endpoint_id: uuid.UUID
    previous_attempts: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    excerpt: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_DUE = DueRows(
    table="webhook_deliveries",
    prelude="""
    WITH budget AS (
        SELECT e.id, GREATEST(:per_endpoint - COALESCE(b.in_flight, 0), 0) AS slots
          FROM webhook_endpoints AS e
          LEFT JOIN unnest(CAST(:busy_ids AS uuid[]), CAST(:busy_counts AS int[])) AS b(endpoint_id, in_flight)
                 ON b.endpoint_id = e.id
         WHERE e.active
    ), picked AS (
        SELECT due.id
          FROM budget
         CROSS JOIN LATERAL (
               SELECT id FROM webhook_deliveries
                WHERE endpoint_id = budget.id AND status = 'pending' AND next_attempt_at <= now()
                ORDER BY next_attempt_at
                LIMIT budget.slots
                  FOR UPDATE SKIP LOCKED) AS due
         WHERE budget.slots > 0
         LIMIT :batch
    )""",
    chosen="SELECT id FROM picked",
    joins={"webhook_messages AS m": "m.id = d.message_id", "webhook_endpoints AS e": "e.id = d.endpoint_id"},
    returning="""d.id, d.endpoint_id, d.message_id, d.attempts, m.body, e.url, e.secret,
              CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END AS previous_secret""",
)


@dataclass(frozen=True, slots=True)
class ClaimedWebhookDelivery:
    """A delivery due for an attempt, with its body, its endpoint's URL and signing secrets."""

    id: int
    endpoint_id: uuid.UUID
    message_id: str
    attempts: int
    body: bytes
    url: str
    secret: str
    previous_secret: str | None


# Results of a batch of attempts: logged (unless the endpoint was deleted meanwhile) and applied in one statement.
_RECORD = text(
    """
    WITH r AS (
        SELECT * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:attempted_at AS timestamptz[]), CAST(:status_codes AS int[]),
            CAST(:latencies AS int[]), CAST(:excerpts AS text[]), CAST(:errors AS text[]),
            CAST(:ok AS boolean[]), CAST(:delays AS float8[])
        ) AS r(id, attempted_at, status_code, latency_ms, excerpt, error, ok, delay)
    ), logged AS (
        INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, latency_ms, response_excerpt, error)
        SELECT r.id, r.attempted_at, r.status_code, r.latency_ms, r.excerpt, r.error
          FROM r JOIN webhook_deliveries AS d ON d.id = r.id
    )
    UPDATE webhook_deliveries AS d
       SET attempts = d.attempts + 1,
           last_status_code = r.status_code,
           last_error = r.error,
           status = CASE WHEN r.ok THEN 'delivered'
                         WHEN now() - d.retry_from >= make_interval(secs => :window) THEN 'failed'
                         ELSE 'pending' END,
           delivered_at = CASE WHEN r.ok THEN now() ELSE d.delivered_at END,
           next_attempt_at = CASE WHEN r.ok THEN d.next_attempt_at ELSE now() + make_interval(secs => r.delay) END
      FROM r
     WHERE d.id = r.id
    RETURNING d.id, d.status
    """
)
_RECOVERED = text(
    "UPDATE webhook_endpoints SET failing_since = NULL"
    " WHERE id = ANY(CAST(:ids AS uuid[])) AND failing_since IS NOT NULL"
)
_FAILING = text(
    "UPDATE webhook_endpoints SET failing_since = now() WHERE id = ANY(CAST(:ids AS uuid[])) AND failing_since IS NULL"
)
_DISABLE = text(
    """
    UPDATE webhook_endpoints
       SET active = false, disabled_at = now(), updated_at = now(),
           disabled_reason = 'every delivery failed since ' || to_char(failing_since AT TIME ZONE 'UTC',
                             'YYYY-MM-DD"T"HH24:MI:SS"Z"') || '; re-enable with PATCH active=true'
     WHERE id = ANY(CAST(:ids AS uuid[])) AND active AND failing_since <= now() - make_interval(secs => :after)
    RETURNING id, url, failing_since
    """
)
_ABANDON = text(
    """
    UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint disabled'
     WHERE endpoint_id = ANY(CAST(:ids AS uuid[])) AND status = 'pending'
    """
)


async def claim(
    session: AsyncSession,
    per_endpoint: int,
    busy: Sequence[tuple[uuid.UUID, int]],
    *,
    batch: int,
    lease_seconds: float,
) -> list[ClaimedWebhookDelivery]:
    """Due deliveries of active endpoints, at most `per_endpoint` in flight each (`busy`: those in flight now),
    with what an attempt needs: the body, the endpoint's URL and its signing secrets."""
    return await claim_due(
        session,
        _DUE,
        ClaimedWebhookDelivery,
        batch=batch,
        lease_seconds=lease_seconds,
        per_endpoint=per_endpoint,
        busy_ids=[endpoint for endpoint, _ in busy],
        busy_counts=[count for _, count in busy],
    )


async def record(
    session: AsyncSession, outcomes: Sequence[Outcome], delays: Sequence[float], retry_window: timedelta
) -> list[int]:
    """Log each attempt and apply it (a failed one due again after its delay); the deliveries that failed for
    good, their retry window being over."""
    result = await session.execute(
        _RECORD,
        {
            "ids": [o.delivery_id for o in outcomes],
            "attempted_at": [o.attempted_at for o in outcomes],
            "status_codes": [o.status_code for o in outcomes],
            "latencies": [o.latency_ms for o in outcomes],
            "excerpts": [o.excerpt for o in outcomes],
            "errors": [o.error for o in outcomes],
            "ok": [o.ok for o in outcomes],
            "delays": list(delays),
            "window": retry_window.total_seconds(),
        },
    )
    return [row.id for row in result if row.status == "failed"]


async def recovered(session: AsyncSession, endpoint_ids: Collection[uuid.UUID]) -> None:
    await session.execute(_RECOVERED, {"ids": list(endpoint_ids)})


async def failing(session: AsyncSession, endpoint_ids: Collection[uuid.UUID]) -> None:
    """Endpoints without a success in this batch: failing since now, unless they already were."""
    await session.execute(_FAILING, {"ids": list(endpoint_ids)})


@dataclass(frozen=True, slots=True)
class DisabledEndpoint:
    """An endpoint just disabled for failing too long, and since when it failed."""

    id: uuid.UUID
    url: str
    failing_since: datetime


async def disable_failing_since(
    session: AsyncSession, endpoint_ids: Collection[uuid.UUID], after: timedelta
) -> list[DisabledEndpoint]:
    """Disable those of `endpoint_ids` failing for `after` or longer; their id, URL and failing_since."""
    result = await session.execute(_DISABLE, {"ids": list(endpoint_ids), "after": after.total_seconds()})
    return [DisabledEndpoint(**row._mapping) for row in result]


async def abandon(session: AsyncSession, endpoint_ids: Sequence[uuid.UUID]) -> None:
    """The pending deliveries of disabled endpoints fail."""
    await session.execute(_ABANDON, {"ids": list(endpoint_ids)})
