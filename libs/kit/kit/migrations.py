"""Each service's Alembic migrations, run in its own schema under its own role.

A service's `migrations/env.py` is two lines: import its metadata and call :func:`run_env`. Migrations run on
start-up (unless `MIGRATE_ON_START=false`) and by `python -m <service> migrate`; an advisory lock makes
concurrent replicas take turns.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import asyncpg
import structlog
from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from kit.db import role_for_schema

__all__ = ["alembic_config", "check", "run_env", "upgrade", "wait_migrated"]

log = structlog.get_logger("kit.migrations")
# Alembic's `context` is process-global: two upgrades in one process (tests serve every app in one) take turns.
_ALEMBIC_LOCK = threading.Lock()


def alembic_config(migrations_dir: Path, url: str, schema: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["schema"] = schema
    config.attributes["configure_logger"] = False
    return config


def upgrade(migrations_dir: Path, url: str, schema: str, revision: str = "head") -> None:
    """Blocking: call it from a thread (`asyncio.to_thread`) inside a running event loop."""
    with _ALEMBIC_LOCK:
        command.upgrade(alembic_config(migrations_dir, url, schema), revision)


def wait_migrated(migrations_dir: Path, url: str, schema: str, timeout: float, poll: float = 2.0) -> bool:
    """Whether the schema reached this code's head within `timeout` seconds (read only)."""
    heads = set(ScriptDirectory.from_config(alembic_config(migrations_dir, url, schema)).get_heads())
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def current() -> set[str]:
        connection = await asyncpg.connect(dsn, statement_cache_size=0)
        try:
            rows = await connection.fetch(f'SELECT version_num FROM "{schema}".alembic_version')
        except asyncpg.UndefinedTableError:
            return set()
        finally:
            await connection.close()
        return {row[0] for row in rows}

    deadline = time.monotonic() + timeout
    while True:
        try:
            if asyncio.run(current()) == heads:
                return True
        except (OSError, asyncpg.PostgresError) as exc:
            log.info("migrations.waiting", schema=schema, error=str(exc)[:200])
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def _prepare_schema(connection: Connection, schema: str) -> str | None:
    """Create the schema and, where this login may, a role that owns it and nothing else."""
    role = role_for_schema(schema)
    # Only when missing: a login that owns its schema already (created for it by the database's admin, as the
    # compose init script does) may lack the right to create schemas, and IF NOT EXISTS checks that right first.
    if not connection.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).scalar():
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    can_create_roles = connection.execute(
        text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
    ).scalar()
    role_exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
    if not role_exists and can_create_roles:
        try:
            with connection.begin_nested():
                connection.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
        except Exception:  # another database's migration created it between our check and now
            log.info("migrations.role_exists", role=role)
        role_exists = True
    if not role_exists:
        log.warning("migrations.no_role", schema=schema, reason="this login cannot create roles")
        return None
    if not connection.execute(text("SELECT pg_has_role(current_user, :r, 'MEMBER')"), {"r": role}).scalar():
        if not can_create_roles:
            return None
        connection.execute(text(f'GRANT "{role}" TO current_user'))
    connection.execute(text(f'ALTER SCHEMA "{schema}" OWNER TO "{role}"'))
    # A process that logs in as its own role finds its schema without being told: behind PgBouncer in transaction
    # mode no per-connection setting would survive a transaction (kit.db.Database, `pooled`).
    own_login = connection.execute(text("SELECT current_user = :r"), {"r": role}).scalar()
    if can_create_roles or own_login:
        connection.execute(text(f'ALTER ROLE "{role}" SET search_path TO "{schema}"'))
    return role


def _owned_by_the_models(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Alembic's own version table lives in the schema but not in the models: leave it out of comparisons."""
    return not (type_ == "table" and name == "alembic_version")


def check(migrations_dir: Path, url: str, schema: str) -> None:
    """Raise if the models and the migrations disagree (`alembic check`)."""
    with _ALEMBIC_LOCK:
        command.check(alembic_config(migrations_dir, url, schema))


def _run_migrations(connection: Connection, metadata: MetaData, schema: str) -> None:
    connection.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": f"reciprocity-migrate-{schema}"})
    try:
        role = _prepare_schema(connection, schema)
        if role:
            connection.execute(text(f'SET ROLE "{role}"'))
        connection.execute(text(f'SET search_path TO "{schema}"'))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            transaction_per_migration=True,
            include_object=_owned_by_the_models,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("RESET ROLE"))
        connection.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": f"reciprocity-migrate-{schema}"})
        connection.commit()


async def _run_async(url: str, metadata: MetaData, schema: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations, metadata, schema)
    finally:
        await engine.dispose()


def run_env(metadata: MetaData, schema: str) -> None:
    """The body of every service's `migrations/env.py`."""
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set; run migrations through kit.migrations.upgrade")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, version_table_schema=schema, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(url, metadata, schema))
