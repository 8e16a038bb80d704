"""The background mail sender: drains the mail outbox over SMTP (or into .eml files when no SMTP_HOST).

Delivery is at least once, never silently lost:

- A batch is *claimed* by pushing its rows' `next_attempt_at` one lease into the future (`FOR UPDATE SKIP LOCKED`,
  so replicas share the work). Nothing is marked before sending: a process that dies mid-batch leaves its rows
  pending, and they are due again when the lease runs out.
- Each message is marked `sent` as soon as the SMTP server accepted it (and its body, which holds the personal
  link, is dropped): accepted ids go to the database at once, several in one UPDATE when the previous one is still
  in flight (group commit), while the next message is already being sent. The only window for a duplicate is
  between the server's `250` and that commit: a crash exactly there sends those few messages again, with the same
  Message-ID.
- Refusals: a 4xx or a connection failure is retried after the kit's backoff (`kit.leases.Backoff`) up to
  `MAIL_MAX_ATTEMPTS`, then the message is `failed`; a 5xx is failed at once, and a 5xx on the recipient is a
  hard bounce that puts the customer on the suppression list.
- A sender stops taking new messages from its batch before the lease runs out, so a slow server cannot make two
  senders hold the same row.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import structlog

from kit.db import Database
from kit.files import private_directory, write_private
from kit.leases import Backoff, Lease
from survey import mail_repository as repo
from survey.mail_repository import ClaimedMail

__all__ = ["MailSender"]

log = structlog.get_logger("survey.mail")

# Errors that say nothing about the message but that the server cannot be used now.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPAuthenticationError,
    aiosmtplib.SMTPHeloError,
    aiosmtplib.SMTPNotSupported,
    OSError,
    TimeoutError,
)


class _Defer(Exception):
    """The server is unusable: stop this connection's share of the batch."""


class _SentMarker:
    """Marks accepted messages `sent` right away: one UPDATE in flight at a time, carrying every id accepted
    meanwhile, so the database keeps up with several SMTP connections without a transaction per message."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.waiting: list[int] = []
        self.task: asyncio.Task[None] | None = None

    def add(self, outbox_id: int) -> None:
        self.waiting.append(outbox_id)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self.waiting:
            ids, self.waiting = self.waiting, []
            try:
                async with self.database.engine.begin() as connection:
                    await repo.mark_sent(connection, ids)
            except Exception:
                # Left pending under the lease: these are sent again later (the at-least-once window).
                log.exception("survey.mail.mark_sent_failed", messages=len(ids))

    async def flush(self) -> None:
        if self.task is not None:
            await self.task
        if self.waiting:
            await self._drain()


@dataclass(frozen=True)
class MailConfig:
    """What the sender needs, taken from the settings by `survey.app.mail_config`."""

    smtp_host: str | None  # None: messages become .eml files in `mail_dir`
    smtp_port: int
    smtp_username: str | None
    smtp_password: str | None
    starttls: bool
    smtp_timeout_seconds: float
    sender: str  # the From header; its address is the envelope sender
    mail_dir: Path
    batch_size: int
    connections: int
    max_attempts: int
    lease: Lease
    backoff: Backoff


class MailSender:
    def __init__(self, database: Database, config: MailConfig) -> None:
        self.database = database
        self.config = config
        self.sender_address = email.utils.parseaddr(config.sender)[1] or config.sender
        self.lease = config.lease
        self.backoff = config.backoff

    async def run_until_idle(self) -> None:
        """Send everything that is due now (the periodic job calls this)."""
        while await self.run_once() >= self.config.batch_size:
            pass

    async def run_once(self) -> int:
        async with self.database.engine.begin() as connection:
            rows = await repo.claim(connection, self.config.batch_size, self.lease.seconds)
        if not rows:
            return 0
        # Stop starting new sends well before the lease ends; unsent rows come back when it does.
        deadline = self.lease.deadline()
        suppressed = [row.id for row in rows if row.suppressed]
        if suppressed:
            async with self.database.engine.begin() as connection:
                await repo.cancel(connection, suppressed)
        due = [row for row in rows if not row.suppressed and row.message is not None]
        if self.config.smtp_host and due:
            connections = min(self.config.connections, len(due))
            shares = [due[i::connections] for i in range(connections)]
            marker = _SentMarker(self.database)
            try:
                await asyncio.gather(*(self._send_share(share, deadline, marker) for share in shares))
            finally:
                await marker.flush()
        elif due:
            await self._write_files(due)
        return len(rows)

    def _client(self) -> aiosmtplib.SMTP:
        s = self.config
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username or None,
            password=s.smtp_password or None,
            start_tls=s.starttls,
            timeout=s.smtp_timeout_seconds,
        )

    async def _send_share(self, rows: Sequence[ClaimedMail], deadline: float, marker: _SentMarker) -> None:
        remaining = list(rows)
        try:
            client = self._client()
            try:
                await client.connect()
            except _CONNECTION_ERRORS as exc:
                raise _Defer(f"connect: {type(exc).__name__}: {exc}") from exc
            try:
                while remaining and time.monotonic() < deadline:
                    row = remaining[0]
                    if await self._send_one(client, row):
                        marker.add(row.id)
                    remaining.pop(0)
            finally:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    client.close()
        except _Defer as exc:
            log.warning("survey.mail.server_unavailable", error=str(exc), deferred=len(remaining))
            for row in remaining:
                await self._retry(row, str(exc))

    async def _send_one(self, client: aiosmtplib.SMTP, row: ClaimedMail) -> bool:
        """True when the server accepted the message; refusals are recorded here."""
        # an address beyond ASCII (josé@example.com) needs a server that takes SMTPUTF8; one that does not
        # cannot deliver it, now or later
        options = [] if row.recipient.isascii() else ["SMTPUTF8"]
        try:
            await client.sendmail(self.sender_address, [row.recipient], row.message, mail_options=options)
        except aiosmtplib.SMTPNotSupported as exc:
            if not options:
                raise _Defer(f"{type(exc).__name__}: {exc}") from exc
            await self._refused(row, 553, f"553 {exc}", recipient=False)
            return False
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            code = refused.code if refused else 550
            await self._refused(row, code, f"{code} {refused.message if refused else exc}", recipient=True)
            return False
        except aiosmtplib.SMTPResponseException as exc:
            if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
                raise _Defer(f"{exc.code} {exc.message}") from exc
            await self._refused(row, exc.code, f"{exc.code} {exc.message}", recipient=False)
            return False
        except _CONNECTION_ERRORS as exc:
            raise _Defer(f"{type(exc).__name__}: {exc}") from exc
        return True

    async def _refused(self, row: ClaimedMail, code: int, error: str, *, recipient: bool) -> None:
        if 400 <= code < 500:
            await self._retry(row, error)
            return
        log.warning("survey.mail.refused", invitation_id=str(row.invitation_id), error=error)
        async with self.database.engine.begin() as connection:
            failed = await repo.fail(connection, row.id, error[:500])
            if failed is not None and recipient:
                await repo.bounce(connection, failed.customer_id, failed.email)

    async def _retry(self, row: ClaimedMail, error: str) -> None:
        tried = row.attempts + 1
        async with self.database.engine.begin() as connection:
            if tried >= self.config.max_attempts:
                log.warning("survey.mail.gave_up", invitation_id=str(row.invitation_id), error=error)
                await repo.fail(connection, row.id, error[:500])
            else:
                await repo.retry(connection, row.id, error[:500], self.backoff.delay(tried))

    async def _write_files(self, rows: Sequence[ClaimedMail]) -> None:
        """No SMTP server configured: each message becomes `MAIL_DIR/<invitation_id>.eml`."""
        directory = self.config.mail_dir
        await asyncio.to_thread(_write_all, directory, [(row.invitation_id, row.message) for row in rows])
        async with self.database.engine.begin() as connection:
            await repo.mark_sent(connection, [row.id for row in rows])


def _write_all(directory: Path, messages: Sequence[tuple[uuid.UUID, bytes]]) -> None:
    # each message holds a live survey link (answering it earns points): private to the platform's user
    private_directory(directory)
    for invitation_id, message in messages:
        write_private(directory / f"{invitation_id}.eml", message)
