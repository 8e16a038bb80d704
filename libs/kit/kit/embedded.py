"""The embedded PostgreSQL of the default run (no `DATABASE_URL`): a real server from the `pgserver` package,
with its data under a folder of the project. Used by `make run`, the tests and the benchmarks; the services
themselves never start a database.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["MAX_CONNECTIONS", "start_embedded_postgres"]

# Five processes with a pool of 10 (+10 overflow) each, tests that start a second platform, and psql: the
# server's default of 100 is not enough.
MAX_CONNECTIONS = 400


def start_embedded_postgres(pgdata: Path) -> Any:
    """Start (initialising on first use) the server in `pgdata`; it stops when the last process using it exits.
    `.get_uri()` is its URL (a Unix socket in `pgdata`)."""
    import pgserver  # a development dependency: deployments use DATABASE_URL
    from pgserver.postgres_server import PostmasterInfo, pg_ctl

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    if int(server.psql("SHOW max_connections;").split("\n")[2].strip()) < MAX_CONNECTIONS:
        # Takes effect at the next start. pgserver has no restart of its own: restart with pg_ctl (which reuses
        # the server's options), then let the handle find the new postmaster so it can still stop it at exit.
        server.psql(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS};")
        pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = PostmasterInfo.read_from_pgdata(server.pgdata)
            if info is not None and info.is_running() and info.status == "ready":
                server._postmaster_info = info
                break
            time.sleep(0.1)
    return server
