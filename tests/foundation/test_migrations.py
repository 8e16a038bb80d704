"""Each process's models and migrations agree (`alembic check`), and each schema belongs to its own role."""

import asyncio
import importlib

import asyncpg
import pytest

from kit.migrations import check
from tests.conftest import Platform

PROCESSES = ("gateway", "coupon", "points", "recommend", "survey")


@pytest.mark.parametrize("name", PROCESSES)
async def test_models_and_migrations_agree(platform: Platform, name: str) -> None:
    app = importlib.import_module(f"{name}.app")
    url = platform.env["DATABASE_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)
    await asyncio.to_thread(check, app.MIGRATIONS_DIR, url, app.SCHEMA)


async def test_each_schema_is_owned_by_its_own_role(platform: Platform) -> None:
    connection = await asyncpg.connect(platform.env["DATABASE_URL"])
    try:
        owners = dict(
            await connection.fetch(
                "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = ANY($1::text[])",
                list(PROCESSES),
            )
        )
        assert owners == {name: f"reciprocity_{name}" for name in PROCESSES}
        # a service's role cannot read another service's tables
        can_read = await connection.fetchval(
            "SELECT has_table_privilege('reciprocity_coupon', 'points.idempotency_keys', 'SELECT')"
        )
        assert can_read is False
    finally:
        await connection.close()
