"""SQL of the mail outbox: claiming due messages under a lease, and recording what became of each."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from kit.leases import DueRows, claim_due

__all__ = ["ClaimedMail", "FailedInvitation", "bounce", "cancel", "claim", "fail", "mark_sent", "retry"]


@dataclass(frozen=True, slots=True)
class ClaimedMail:
    """A message due for sending, with whether its customer is on the suppression list."""

    id: int
    invitation_id: uuid.UUID
    recipient: str
    message: bytes  # cleared only when the message leaves `pending`, so a claimed one has it
    attempts: int
    suppressed: bool


@dataclass(frozen=True, slots=True)
class FailedInvitation:
    """Whom an invitation that failed for good was for."""

    customer_id: str
    email: str


_DUE = DueRows(
    table="mail_outbox",
    joins={"invitations AS i": "i.id = d.invitation_id"},
    returning="""d.id, d.invitation_id, d.recipient, d.message, d.attempts,
              EXISTS (SELECT 1 FROM suppressions AS s
                       WHERE s.customer_id = i.customer_id OR lower(s.email) = lower(i.email)) AS suppressed""",
)

_SENT_MANY = text(
    """
    WITH sent AS (
        UPDATE mail_outbox
           SET status = 'sent', sent_at = now(), message = NULL, attempts = attempts + 1, last_error = NULL
         WHERE id = ANY(:ids) AND status = 'pending'
        RETURNING invitation_id)
    UPDATE invitations SET status = 'sent', sent_at = now() WHERE id IN (SELECT invitation_id FROM sent)
    """
)

_RETRY = text(
    """
    UPDATE mail_outbox
       SET attempts = attempts + 1, last_error = :error,
           next_attempt_at = now() + make_interval(secs => :delay)
     WHERE id = :id AND status = 'pending'
    """
)

_FAIL = text(
    """
    WITH failed AS (
        UPDATE mail_outbox
           SET status = 'failed', attempts = attempts + 1, last_error = :error, message = NULL
         WHERE id = :id AND status = 'pending'
        RETURNING invitation_id)
    UPDATE invitations SET status = 'failed' WHERE id IN (SELECT invitation_id FROM failed)
    RETURNING customer_id, email
    """
)

_CANCEL = text(
    """
    WITH cancelled AS (
        UPDATE mail_outbox SET status = 'cancelled', message = NULL
         WHERE id = ANY(:ids) AND status = 'pending'
        RETURNING invitation_id)
    UPDATE invitations SET status = 'cancelled' WHERE id IN (SELECT invitation_id FROM cancelled)
    """
)

_BOUNCE = text(
    """
    INSERT INTO suppressions (customer_id, email, reason) VALUES (:customer_id, :email, 'hard_bounce')
    ON CONFLICT (customer_id) WHERE customer_id IS NOT NULL DO NOTHING
    """
)


async def claim(connection: AsyncConnection, batch: int, lease_seconds: float) -> list[ClaimedMail]:
    """Due messages, oldest due first, each with whether its customer is suppressed."""
    return await claim_due(connection, _DUE, ClaimedMail, batch=batch, lease_seconds=lease_seconds)


async def mark_sent(connection: AsyncConnection, ids: Sequence[int]) -> None:
    await connection.execute(_SENT_MANY, {"ids": list(ids)})


async def retry(connection: AsyncConnection, outbox_id: int, error: str, delay_seconds: float) -> None:
    await connection.execute(_RETRY, {"id": outbox_id, "error": error, "delay": delay_seconds})


async def fail(connection: AsyncConnection, outbox_id: int, error: str) -> FailedInvitation | None:
    """The message failed for good, and so did its invitation; the invitation's customer and email."""
    row = (await connection.execute(_FAIL, {"id": outbox_id, "error": error})).first()
    return None if row is None else FailedInvitation(**row._mapping)


async def cancel(connection: AsyncConnection, ids: Sequence[int]) -> None:
    await connection.execute(_CANCEL, {"ids": list(ids)})


async def bounce(connection: AsyncConnection, customer_id: str, email: str) -> None:
    """A hard bounce: the customer goes on the suppression list."""
    await connection.execute(_BOUNCE, {"customer_id": customer_id, "email": email})
