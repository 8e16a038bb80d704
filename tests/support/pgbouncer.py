"""A real `pgbouncer` (Debian's package) of the test's own in transaction mode, on a free loopback port, in
front of the test database's server; stopped by its PID."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.servers import free_port

MISSING = "pgbouncer is not installed (Debian's pgbouncer package; .ci/run installs it with apt-get)"


def pgbouncer_binary() -> str:
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if binary is None:
        pytest.skip(MISSING)
    return binary


class PgBouncer:
    """Every database name is passed through to the server of `server_url`; clients log in as one of `users`,
    and so does PgBouncer to the server (which trusts loopback logins in the test setups), pooling per user as
    a managed pooler does."""

    def __init__(self, server_url: str, users: list[str], *, pool_size: int = 4) -> None:
        self.binary = pgbouncer_binary()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="reciprocity-pgbouncer-"))
        parts = urlsplit(server_url)
        query = parse_qs(parts.query)
        host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
        # run as root it drops to another user, who must reach a socket directory (the embedded server's is
        # reachable by the user that server runs as)
        self.user = _owner(host) if host.startswith("/") else None
        target = [f"host={host}", f"port={parts.port or 5432}"]
        (self.directory / "users.txt").write_text("".join(f'"{user}" ""\n' for user in users))
        (self.directory / "pgbouncer.ini").write_text(
            f"""[databases]
* = {" ".join(target)}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.directory / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {self.directory / "pgbouncer.log"}
pidfile = {self.directory / "pgbouncer.pid"}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str, user: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PgBouncer:
        command = [self.binary, str(self.directory / "pgbouncer.ini")]
        if os.geteuid() == 0:  # it refuses to run as root: drop to an unprivileged user
            user = self.user or next((u for u in ("postgres", "nobody") if _exists(u)), "nobody")
            shutil.chown(self.directory, user)
            self.directory.chmod(0o755)
            command[1:1] = ["-u", user]
        self.process = subprocess.Popen(
            command, stdout=(self.directory / "stdout.log").open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log()[-800:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("pgbouncer did not listen within 10 s")

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.directory.glob("*.log")))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _owner(path: str) -> str | None:
    try:
        name = pwd.getpwuid(os.stat(path).st_uid).pw_name
    except (KeyError, OSError):
        return None
    return None if name == "root" else name


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True
