"""`kit.db.sole_statement_connection`: a request's only statement runs on its own, outside any transaction, unless
the request's session already holds a connection (an Idempotency-Key claimed in its transaction): then it joins
that transaction, so the stored answer and the statement commit or roll back together."""

from __future__ import annotations

from kit.db import Database, sole_statement_connection
from kit.settings import asyncpg_url


async def test_alone_it_runs_outside_any_transaction(database_url: str) -> None:
    database = Database(asyncpg_url(database_url), "points", pool_size=2)
    try:
        async with (
            database.sessionmaker() as session,
            session.begin(),
            sole_statement_connection(session) as connection,
        ):
            assert not connection.is_in_transaction()
            assert await connection.fetchval("SELECT current_schema()") == "points"
    finally:
        await database.dispose()


async def test_after_another_statement_it_joins_the_request_transaction(database_url: str) -> None:
    database = Database(asyncpg_url(database_url), "points", pool_size=2)
    try:
        async with database.sessionmaker() as session, session.begin():
            own = await session.connection()
            await own.exec_driver_sql("CREATE TEMPORARY TABLE claimed (id int) ON COMMIT DROP")
            async with sole_statement_connection(session) as connection:
                assert connection.is_in_transaction()
                await connection.execute("INSERT INTO claimed VALUES (1)")  # sees the request's own table
    finally:
        await database.dispose()
