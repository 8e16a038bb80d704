"""Console sessions, kept in the gateway's own table: the cookie carries a random token and the table only its
hash, so a stolen database row signs no one in.

A session ends when it is idle past `CONSOLE_IDLE_SECONDS`, at the latest `CONSOLE_SESSION_SECONDS` after login,
at logout, when its API key is revoked (the row goes with the key) and when the admin key is rotated (the
fingerprint no longer matches). Its principal is rebuilt from the key's current scopes on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.console import repository
from gateway.principals import Principal

__all__ = ["ConsoleSession", "admin_fingerprint", "end", "load", "start"]

# last_seen_at is written at most this often, so browsing costs no write per page
TOUCH_SECONDS = 60


@dataclass(frozen=True)
class ConsoleSession:
    token_hash: str
    principal: Principal
    csrf_token: str
    expires_at: datetime


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def admin_fingerprint(admin_key: str) -> str:
    return hmac.new(admin_key.encode(), b"reciprocity console session", hashlib.sha256).hexdigest()


async def start(
    session: AsyncSession, principal: Principal, *, admin_key: str, lifetime_seconds: int
) -> tuple[str, ConsoleSession]:
    """A new session (never one the browser brought along: no fixation) and the token for its cookie."""
    token = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=lifetime_seconds)
    await repository.insert_session(
        session,
        token_hash=_hash(token),
        principal_kind=principal.kind,
        api_key_id=principal.id if principal.kind == "partner" else None,
        admin_fingerprint=admin_fingerprint(admin_key) if principal.kind == "admin" else None,
        csrf_token=csrf_token,
        now=now,
        expires_at=expires_at,
    )
    # expired sessions are swept as new ones start
    await repository.delete_expired_sessions(session, now)
    return token, ConsoleSession(_hash(token), principal, csrf_token, expires_at)


async def load(session: AsyncSession, token: str, *, admin_key: str, idle_seconds: int) -> ConsoleSession | None:
    now = datetime.now(UTC)
    row = await repository.find_session(session, _hash(token))
    if row is None or row.expires_at <= now or row.last_seen_at <= now - timedelta(seconds=idle_seconds):
        return None
    if row.principal_kind == "admin":
        if row.admin_fingerprint is None or not hmac.compare_digest(
            row.admin_fingerprint, admin_fingerprint(admin_key)
        ):
            return None
        principal = Principal("admin", "admin", frozenset({"admin"}))
    elif row.principal_kind == "partner" and row.scopes is not None and row.revoked_at is None:
        principal = Principal("partner", str(row.api_key_id), frozenset(row.scopes))
    else:
        return None
    if row.last_seen_at <= now - timedelta(seconds=TOUCH_SECONDS):
        await repository.touch_session(session, row.token_hash, now)
    return ConsoleSession(row.token_hash, principal, row.csrf_token, row.expires_at)


async def end(session: AsyncSession, token_hash: str) -> None:
    await repository.delete_session(session, token_hash)
