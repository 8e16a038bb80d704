"""PostgreSQL for the suite: on `TEST_DATABASE_URL`'s server when set, else on an embedded server (pgserver) under
`.data/test-pg`.

Migrating the five schemas costs seconds; cloning a migrated database costs a fraction of one. So the session
migrates one template database once (`MigratedTemplate`), and every database the suite makes on that server after
that (the session's own, a private platform's, a rig's) is a `CREATE DATABASE ... TEMPLATE` copy of it."""

from __future__ import annotations

import asyncio
import importlib
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from kit.embedded import start_embedded_postgres
from kit.migrations import upgrade

ROOT = Path(__file__).resolve().parents[2]
# Every process with a schema of its own; each app module has MIGRATIONS_DIR.
SCHEMAS = ("coupon", "points", "recommend", "survey", "gateway")
# The migrated template of the running session: (server URL, database name), set by `MigratedTemplate.create`.
_template: tuple[str, str] | None = None


def server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url.replace("postgresql+asyncpg://", "postgresql://", 1)
    return str(start_embedded_postgres(ROOT / ".data" / "test-pg").get_uri())


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _admin(base_url: str, statement: str) -> None:
    # The server is shared with other runs on this machine: wait a little for a connection slot rather than fail.
    for attempt in range(60):
        try:
            connection = await asyncpg.connect(base_url)
            break
        except asyncpg.TooManyConnectionsError:
            if attempt == 59:
                raise
            await asyncio.sleep(0.5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def copies_the_template(base_url: str) -> bool:
    """Whether `create_database(base_url)` makes a migrated copy (the session's template lives on that server)."""
    return _template is not None and _template[0] == base_url


async def create_database(base_url: str, *, empty: bool = False) -> tuple[str, str]:
    """A new database: migrated (a copy of the session's template) when the template lives on this server, unless
    `empty` asks for a database without schemas."""
    name = f"reciprocity_test_{uuid.uuid4().hex[:10]}"
    template = (
        f' TEMPLATE "{_template[1]}"' if _template is not None and copies_the_template(base_url) and not empty else ""
    )
    await _admin(base_url, f'CREATE DATABASE "{name}"{template}')
    return with_database(base_url, name), name


async def drop_database(base_url: str, name: str) -> None:
    await _admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class MigratedTemplate:
    """A database with every schema migrated to head, that nothing connects to (a clone needs its template idle)."""

    def __init__(self, base_url: str, name: str) -> None:
        self.base_url = base_url
        self.name = name

    @classmethod
    async def create(cls, base_url: str) -> MigratedTemplate:
        global _template
        url, name = await create_database(base_url, empty=True)
        migration_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
        for schema in SCHEMAS:
            directory = importlib.import_module(f"{schema}.app").MIGRATIONS_DIR
            await asyncio.to_thread(upgrade, directory, migration_url, schema)
        # a connection left open by mistake would make every clone fail: refuse them
        await _admin(base_url, f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
        _template = (base_url, name)
        return cls(base_url, name)

    async def drop(self) -> None:
        global _template
        _template = None
        await _admin(self.base_url, f'ALTER DATABASE "{self.name}" WITH IS_TEMPLATE false')
        await drop_database(self.base_url, self.name)
