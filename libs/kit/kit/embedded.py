"""The embedded PostgreSQL of the default run (no `DATABASE_URL`): a real server from the `pgserver` package,
with its data under a folder of the project. Used by `make run`, the tests and the benchmarks; the services
themselves never start a database.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["MAX_CONNECTIONS", "restart_embedded_postgres", "start_embedded_postgres"]

# Five processes with a pool of 10 (+10 overflow) each, tests that start a second platform, and psql: the
# server's default of 100 is not enough.
MAX_CONNECTIONS = 400


def start_embedded_postgres(pgdata: Path) -> Any:
    """Start (initialising on first use) the server in `pgdata`; it stops when the last process using it exits.
    `.get_uri()` is its URL (a Unix socket in `pgdata`)."""
    import pgserver  # a development dependency: deployments use DATABASE_URL

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    if int(server.psql("SHOW max_connections;").split("\n")[2].strip()) < MAX_CONNECTIONS:
        # Takes effect at the next start.
        server.psql(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS};")
        restart_embedded_postgres(server)
    return server


def restart_embedded_postgres(server: Any, *, timeout: float = 30) -> None:
    """Restart in fast mode (every session is terminated, as in a real restart) and wait until it is ready.

    pgserver has no restart of its own: pg_ctl reuses the server's options, then the handle must find the new
    postmaster so that it can still stop it at exit."""
    from pgserver.postgres_server import PostmasterInfo, pg_ctl

    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=int(timeout))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = PostmasterInfo.read_from_pgdata(server.pgdata)
        if info is not None and info.is_running() and info.status == "ready":
            server._postmaster_info = info
            return
        time.sleep(0.1)
    raise TimeoutError(f"the embedded PostgreSQL in {server.pgdata} was not ready after {timeout} s")
