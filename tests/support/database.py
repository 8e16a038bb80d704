"""A fresh PostgreSQL database for one test session: on `TEST_DATABASE_URL`'s server when set, else on an
embedded server (pgserver) under `.data/test-pg`."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from kit.embedded import start_embedded_postgres

ROOT = Path(__file__).resolve().parents[2]


def server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url.replace("postgresql+asyncpg://", "postgresql://", 1)
    return str(start_embedded_postgres(ROOT / ".data" / "test-pg").get_uri())


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def create_database(base_url: str) -> tuple[str, str]:
    name = f"reciprocity_test_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(base_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return with_database(base_url, name), name


async def drop_database(base_url: str, name: str) -> None:
    connection = await asyncpg.connect(base_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
