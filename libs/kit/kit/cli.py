"""`python -m <service> serve|migrate|wait-migrated`: the same commands for every process.

`wait-migrated` returns once the database holds this code's migration head (run by a deployment's init
container while the migration job runs, deploy/k8s); it never changes anything itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import uvicorn

from kit.logging import configure_logging
from kit.migrations import upgrade, wait_migrated
from kit.settings import ServiceSettings

__all__ = ["main"]


def main(
    *,
    name: str,
    factory: str,
    settings_factory: Callable[[], ServiceSettings],
    port: Callable[[ServiceSettings], int],
    migrations_dir: Path,
    schema: str,
    argv: list[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {name}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (migrates first unless MIGRATE_ON_START=false)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None)
    sub.add_parser("migrate", help="apply this service's migrations and exit")
    wait = sub.add_parser("wait-migrated", help="wait until the database is at this code's migration head")
    wait.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    settings = settings_factory()
    configure_logging(settings.log_level, settings.log_format, service=name)
    if args.command == "migrate":
        upgrade(migrations_dir, settings.migration_url, schema)
        return
    if args.command == "wait-migrated":
        if not wait_migrated(migrations_dir, settings.migration_url, schema, args.timeout):
            raise SystemExit(f"{name}: the database is not at this code's migration head after {args.timeout} s")
        return
    uvicorn.run(
        factory,
        factory=True,
        host=args.host,
        port=args.port or port(settings),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # Longer than the gateway's pooled connections stay idle (30 s), so the server never closes one the
        # gateway is about to reuse (that race surfaced as 503s under load).
        timeout_keep_alive=65,
    )
