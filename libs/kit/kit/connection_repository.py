"""The SQL `kit.db` sends about the connection itself, never about a service's data: whether the login may assume
the service's role, who it logs in as, the per-transaction scope behind a pooler, and the readiness ping."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Login", "login", "may_assume", "ping", "scope_transaction"]


@dataclass(frozen=True, slots=True)
class Login:
    user: str
    search_path: str


async def may_assume(connection: asyncpg.Connection, role: str) -> bool:
    """Whether the role exists and the login is a member of it."""
    found = await connection.fetchval(
        "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = $1", role
    )
    return bool(found)


async def login(connection: asyncpg.Connection) -> Login:
    row = await connection.fetchrow("SELECT current_user, current_setting('search_path')")
    return Login(str(row[0]), str(row[1]))


_SCOPE = text("SELECT set_config('search_path', :schema, true), set_config('role', :role, true)")


def scope_transaction(connection: Connection, schema: str, role: str | None) -> None:
    """The schema and role for the current transaction only (`set_config(..., true)`): nothing outlives it on a
    server connection that a pooler hands to another client next."""
    connection.execute(_SCOPE, {"schema": schema, "role": role or "none"})


async def ping(connection: AsyncConnection) -> None:
    await connection.execute(text("SELECT 1"))
