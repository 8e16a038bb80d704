"""`kit.db.sole_statement_connection`: a request's only statement runs on its own, outside any transaction, unless
the request's session already holds a connection (an Idempotency-Key claimed in its transaction): then it joins
that transaction, so the stored answer and the statement commit or roll back together."""

from __future__ import annotations

from kit.db import Database, own_driver_connection, sole_statement_connection
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


async def test_behind_a_pooler_with_a_shared_login_a_statement_of_its_own_finds_its_schema(database_url: str) -> None:
    """A transaction-mode pooler with one login for every schema: nothing is set per connection, so a statement
    outside a transaction would run in no schema of ours. Its own connection then runs in a scoped transaction."""
    database = Database(asyncpg_url(database_url), "gateway", pooled=True, scoped_login=False, pool_size=2)
    try:
        async with own_driver_connection(database) as connection:
            assert await connection.fetchval("SELECT current_schema()") == "gateway"
        async with (
            database.sessionmaker() as session,
            session.begin(),
            sole_statement_connection(session) as connection,
        ):
            assert await connection.fetchval("SELECT current_schema()") == "gateway"
    finally:
        await database.dispose()
