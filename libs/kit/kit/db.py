"""Async SQLAlchemy on asyncpg, one schema (and, where the server allows, one role) per service.

The request owns the transaction: :class:`TransactionalRoute` opens a session (its transaction begins with the
request's first statement), runs the endpoint, stores an idempotent response if asked to, and commits *before* the
response is sent, so a failed commit can never go out as a success. Domain code flushes; it never commits.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, ClassVar

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import greenlet_spawn
from starlette.responses import Response

from kit import connection_repository, idempotency
from kit.errors import DomainError
from kit.json import dumps_text, loads
from kit.state import DATABASE

__all__ = [
    "Database",
    "SessionDep",
    "TransactionalRoute",
    "array_columns",
    "get_session",
    "own_driver_connection",
    "request_driver_connection",
    "role_for_schema",
    "service_router",
    "sole_statement_connection",
]


log = structlog.get_logger("kit.db")

_DATABASE_INFO = "kit.database"  # each session's `info`: the Database it came from


def role_for_schema(schema: str) -> str:
    return f"reciprocity_{schema}"


def raw_dsn(url: str) -> str:
    """The URL for asyncpg itself (no SQLAlchemy driver suffix)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


# Behind PgBouncer in transaction mode a statement prepared by name on one server connection may meet the next
# transaction on another one (or another client's statement of the same name): asyncpg's statement cache off and
# SQLAlchemy's too, so every statement is the unnamed one, parsed again where it runs; nothing is left behind on
# the server. (A session-level SET would leak the same way: see Database's per-transaction scope.)
POOLER_CONNECT_ARGS: dict[str, Any] = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
POOLER_ASYNCPG_ARGS: dict[str, Any] = {"statement_cache_size": 0}


async def role_is_usable(url: str, role: str, *, pooled: bool = False) -> bool:
    connection = await asyncpg.connect(raw_dsn(url), **(POOLER_ASYNCPG_ARGS if pooled else {}))
    try:
        return await connection_repository.may_assume(connection, role)
    finally:
        await connection.close()


async def logs_in_scoped(url: str, schema: str, role: str) -> bool:
    """Whether this login is the service's own role with its schema as the default search_path (set by the
    migrations): then no statement needs scoping, in a transaction or not."""
    connection = await asyncpg.connect(raw_dsn(url), **POOLER_ASYNCPG_ARGS)
    try:
        login = await connection_repository.login(connection)
    finally:
        await connection.close()
    return login.user == role and login.search_path.strip('"') == schema


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout: a connection whose socket is already closed (the server restarted, failed over or ended the
    session) is replaced before anyone uses it.

    SQLAlchemy only learns of a dead connection when one of *its* statements fails on it; statements sent
    straight to asyncpg (the hot paths) fail without telling it, and the dead connection went back to the pool
    as if healthy, to fail the next request too. asyncpg knows locally that its socket closed, so this costs no
    round trip (unlike `pool_pre_ping`); `DisconnectionError` makes the pool connect afresh and retry."""
    if dbapi_connection.driver_connection.is_closed():
        raise sa_exc.DisconnectionError("the pooled connection was closed by the server")


class Database:
    """One engine per process, bound to the service's schema (search_path) and role.

    Directly connected, the schema and role are the connection's own (startup parameters). Behind a
    transaction-mode pooler (`pooled`), a server connection serves other clients between transactions, so both
    are set again at the start of every transaction, for that transaction only (one round trip more).
    """

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        role: str | None = None,
        pool_size: int = 20,
        pooled: bool = False,
        scoped_login: bool = False,
    ) -> None:
        server_settings = {"application_name": f"reciprocity-{schema}"}
        if not pooled:
            server_settings["search_path"] = schema
            if role:
                server_settings["role"] = role
        self.schema = schema
        self.role = role
        self.pooled = pooled
        # No overflow: SQLAlchemy closes overflow connections as they come back whenever the queue is full, so
        # under steady load every few requests would open a new server backend. A fixed pool keeps them open.
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=10,
            # every json/jsonb value in and out (events, replays, read models) through orjson: the standard
            # library's decoder was a tenth of the gateway's CPU while its relay drained an import
            json_serializer=dumps_text,
            json_deserializer=loads,
            connect_args={"server_settings": server_settings, **(POOLER_CONNECT_ARGS if pooled else {})},
        )
        event.listen(self.engine.sync_engine.pool, "checkout", _refuse_closed_connection)
        if pooled and not scoped_login:
            # A login shared with other schemas (one user for everything): each transaction is scoped; statements
            # outside a transaction (autocommit) would find no schema, so such a deployment should give each
            # process its own login role, as deploy/ does.

            @event.listens_for(self.engine.sync_engine, "begin")
            def _scope_transaction(connection: Connection) -> None:
                connection_repository.scope_transaction(connection, schema, role)

        # statements outside a transaction find their schema only when the login is the process's own
        self.autocommit_finds_schema = not (pooled and not scoped_login)
        self.sessionmaker = async_sessionmaker(
            self.engine, expire_on_commit=False, autoflush=False, info={_DATABASE_INFO: self}
        )

    @classmethod
    async def connect(cls, url: str, schema: str, *, pool_size: int = 20, pooled: bool = False) -> Database:
        """Use the service's own role when migrations could create it and this login may assume it."""
        role = role_for_schema(schema)
        usable = await role_is_usable(url, role, pooled=pooled)
        scoped_login = pooled and await logs_in_scoped(url, schema, role)
        if pooled and not scoped_login:
            log.warning("database.pooled_shared_login", schema=schema, hint="log in as " + role)
        return cls(
            url,
            schema,
            role=role if usable else None,
            pool_size=pool_size,
            pooled=pooled,
            scoped_login=scoped_login,
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work outside a request (background jobs, event relays)."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection_repository.ping(connection)

    async def dispose(self) -> None:
        await self.engine.dispose()


async def request_driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session, joined to the session's transaction (the request's, under a
    `service_router` route): what is sent on it commits or rolls back with everything else the request did.

    For bulk statements (`unnest` arrays, COPY) and hot paths, where SQLAlchemy's per-statement overhead would be
    most of the cost. SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its own first statement; statements
    sent straight to asyncpg before that would each commit alone, so the transaction is begun here."""
    raw = await (await session.connection()).get_raw_connection()
    connection: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
    if not connection.is_in_transaction():
        # the adapter's own BEGIN (SQLAlchemy is pinned in constraints.txt), so that SQLAlchemy knows of the
        # transaction and commits or rolls it back: one round trip, where a first statement would cost two
        await raw.dbapi_connection._start_transaction()  # type: ignore[union-attr]
    return connection


@asynccontextmanager
async def sole_statement_connection(session: AsyncSession) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection for a request whose whole database work is one statement (a PL/pgSQL function call is
    one): PostgreSQL runs a statement atomically on its own, so it is sent with no BEGIN and COMMIT around it, on a
    pooled connection taken without the ORM session's bookkeeping (together a third of a points redemption's CPU).

    When the request's session already holds a connection (an Idempotency-Key claimed in its transaction), the
    statement joins the request's transaction instead, as with :func:`request_driver_connection`. Send nothing else
    in the request."""
    database: Database | None = session.info.get(_DATABASE_INFO)
    if database is None or _holds_connection(session):
        yield await request_driver_connection(session)
        return
    async with own_driver_connection(database) as connection:
        yield connection


def _holds_connection(session: AsyncSession) -> bool:
    transaction = session.sync_session.get_transaction()
    return transaction is not None and bool(transaction._connections)  # SQLAlchemy is pinned in constraints.txt


def array_columns(rows: Sequence[Any], kind: type[Any]) -> list[list[Any]]:
    """Rows of a dataclass as one list per field, in the dataclass's order: the arrays of a statement that reads
    its rows from `unnest($1::type[], $2::type[], ...)` on a raw connection (one round trip for them all)."""
    return [[getattr(row, field.name) for row in rows] for field in dataclasses.fields(kind)]


@asynccontextmanager
async def own_driver_connection(database: Database) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection of its own, in no transaction: each statement commits by itself, whatever the
    request around it does later (a reservation that must be stored before another service is asked to act on
    it). Never hold it while the request's session holds a connection too: a pool of N would deadlock under N
    such requests.

    Behind a transaction-mode pooler with a login shared by every schema, a statement outside a transaction would
    find no schema: there the block runs in one transaction of its own, scoped to the schema (so use it for one
    statement at a time, as every caller does)."""
    if database.autocommit_finds_schema:
        # the pool's connection itself, without SQLAlchemy's Connection around it: a third of the checkout's CPU
        pooled = await database.engine.raw_connection()
        try:
            yield pooled.driver_connection  # type: ignore[misc]
        finally:
            # back to the pool (its reset on return may need the event loop), whole even when the request is being
            # cancelled: a return cut short would leave the pool short of a connection (SQLAlchemy's own
            # `AsyncConnection` shields its close the same way)
            await asyncio.shield(greenlet_spawn(pooled.close))
        return
    # the engine's `begin` listener scopes the transaction
    async with database.engine.connect() as connection, connection.begin():
        raw = await connection.get_raw_connection()
        yield raw.driver_connection  # type: ignore[misc]


def get_session(request: Request) -> AsyncSession:
    session = getattr(request.state, "session", None)
    if session is None:
        raise RuntimeError("SessionDep used on a route that is not a TransactionalRoute; use service_router()")
    return session  # type: ignore[no-any-return]


async def _session_dependency(request: Request) -> AsyncSession:
    # `async def`: FastAPI runs plain `def` dependencies in its thread pool, a hand-off per request.
    return get_session(request)


SessionDep = Annotated[AsyncSession, Depends(_session_dependency)]


class TransactionalRoute(APIRoute):
    """A route whose request owns one transaction, with Idempotency-Key handling on POST (unless the route
    class says its requests are deduplicated another way)."""

    honours_idempotency_key: ClassVar[bool] = True

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        honours_idempotency_key = self.honours_idempotency_key and "POST" in (self.methods or ())

        async def run_in_transaction(request: Request) -> Response:
            # The transaction begins with the request's first statement (the session's autobegin), not up front:
            # a request that sends none, or only a sole statement of its own, pays for no session at all (begin,
            # commit and close with nothing in them were 95 us a request, a twentieth of a points redemption).
            session = DATABASE.of(request.app).sessionmaker()
            request.state.session = session
            try:
                try:
                    response = await run(request, session)
                except DomainError as exc:
                    if exc.keep_changes and session.in_transaction():
                        await session.commit()  # what it kept, before the refusal goes out
                    raise
                if session.in_transaction():
                    await session.commit()  # before the response is sent: a failed commit is never a success
                return response
            finally:
                if session.in_transaction() or session.identity_map:
                    await session.close()  # rolls back whatever did not commit

        async def run(request: Request, session: AsyncSession) -> Response:
            key = request.headers.get(idempotency.HEADER) if honours_idempotency_key else None
            if key is None:
                return await handler(request)
            claim = await idempotency.claim(session, request, key)
            if claim.replay is not None:
                return claim.replay
            response = await handler(request)
            await idempotency.remember(session, claim, response)
            return response

        return run_in_transaction


def service_router(**kwargs: Any) -> APIRouter:
    """The router every service uses for its API: each request runs in one transaction."""
    return APIRouter(route_class=TransactionalRoute, **kwargs)
