"""`make run`: the whole platform in the foreground, supervised.

1. Secrets: `LOYALTY_ADMIN_KEY`, `LOYALTY_JWT_SECRET` and `LOYALTY_INTERNAL_TOKEN` come from the environment or
   `.env`; any that is unset is generated once into `.data/secrets.env` and reused on later runs.
2. Database: `DATABASE_URL`, or else an embedded PostgreSQL (pgserver) kept under `.data/pg`.
3. Migrations: each service's, in turn (`python -m <service> migrate`).
4. The four services and the gateway as child processes; one that dies is restarted (with backoff). Each is
   given the whole environment: `PROCESS_ROLE` (all by default; `worker` runs only the background work, `api`
   only the requests), `REDIS_URL`, `DATABASE_DIRECT_URL`, the ports and the `*_URL` settings, so several
   `make run` against one `DATABASE_URL` are replicas of one platform.
5. Ctrl-C or SIGTERM stops every child, then the embedded database.

The terminal shows progress and the banner; the processes' own logs go to `.data/logs/<process>.log`, unless
`LOG_LEVEL` asks for INFO or DEBUG, which prints them here as well (as before).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kit.files import TRAVERSABLE_DIRECTORY, append_private, private_directory, write_private

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".data"
SERVICES = ("coupon", "points", "recommend", "survey")
PROCESSES = (*SERVICES, "gateway")
DEFAULT_PORTS = {"gateway": 8000, "coupon": 8001, "points": 8002, "recommend": 8003, "survey": 8004}
SECRET_NAMES = ("LOYALTY_ADMIN_KEY", "LOYALTY_JWT_SECRET", "LOYALTY_INTERNAL_TOKEN")
LOGS = DATA / "logs"
VERBOSE_LEVELS = frozenset({"DEBUG", "INFO"})


def say(message: str) -> None:
    print(f"[run] {message}", flush=True)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def load_secrets(env: dict[str, str]) -> dict[str, str]:
    stored_path = DATA / "secrets.env"
    stored = read_env_file(stored_path)
    changed = False
    for name in SECRET_NAMES:
        if env.get(name):
            continue
        if name not in stored:
            stored[name] = secrets.token_urlsafe(32)
            changed = True
        env[name] = stored[name]
    if changed:
        write_private(stored_path, "".join(f"{k}={v}\n" for k, v in stored.items()).encode())
    return env


def start_database(env: dict[str, str]) -> object | None:
    if env.get("DATABASE_URL"):
        say("using DATABASE_URL")
        return None
    from kit.embedded import start_embedded_postgres

    say("starting the embedded PostgreSQL under .data/pg")
    server = start_embedded_postgres(DATA / "pg")
    env["DATABASE_URL"] = server.get_uri()
    return server


def wait_ready(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def logs_to_terminal(env: dict[str, str]) -> bool:
    """A LOG_LEVEL of INFO or DEBUG asks to watch the logs; by default they go to files, so the terminal is left
    with what a person starting the platform needs to read."""
    return env.get("LOG_LEVEL", "").strip().upper() in VERBOSE_LEVELS


def log_file(name: str) -> Path:
    return LOGS / f"{name}.log"


def migrate(name: str, env: dict[str, str], to_terminal: bool) -> None:
    """Quiet unless it fails: then its output is printed (and kept in the process's log file)."""
    if to_terminal:
        subprocess.run([sys.executable, "-m", name, "migrate"], env=env, cwd=ROOT, check=True)
        return
    result = subprocess.run(
        [sys.executable, "-m", name, "migrate"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    with append_private(log_file(name)) as output:
        output.write(result.stdout)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, result.args, output=result.stdout)


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.to_terminal = logs_to_terminal(env)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, list[float]] = {name: [] for name in PROCESSES}
        self.stopping = False

    def port(self, name: str) -> int:
        return int(self.env.get(f"{name.upper()}_PORT", DEFAULT_PORTS[name]))

    def start(self, name: str) -> None:
        output = None if self.to_terminal else append_private(log_file(name))
        try:
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", name, "serve", "--host", self.env.get("BIND_HOST", "127.0.0.1")],
                env={**self.env, "MIGRATE_ON_START": "false"},
                cwd=ROOT,
                stdout=output,
                stderr=output,
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own descriptor

    def supervise(self) -> None:
        while not self.stopping:
            for name, child in list(self.children.items()):
                if self.stopping or child.poll() is None:
                    continue
                recent = [t for t in self.restarts[name] if time.monotonic() - t < 60]
                delay = min(30.0, 0.5 * 2 ** len(recent))
                where = "" if self.to_terminal else f" (its log: {log_file(name).relative_to(ROOT)})"
                say(f"{name} exited with {child.returncode}; restarting in {delay:.1f} s{where}")
                time.sleep(delay)
                if self.stopping:
                    return
                self.restarts[name] = [*recent, time.monotonic()]
                self.start(name)
            time.sleep(0.5)

    def stop(self) -> None:
        self.stopping = True
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 15
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop in time; killing it")
                child.kill()
                child.wait()


def main() -> None:
    # .data may be traversed (the embedded PostgreSQL's own user reaches .data/pg), never listed; what is inside
    # is the platform user's alone
    private_directory(DATA, TRAVERSABLE_DIRECTORY)
    private_directory(DATA / "mail")
    private_directory(LOGS)
    env = {**read_env_file(ROOT / ".env"), **os.environ}
    env = load_secrets(env)
    for name in PROCESSES:
        env.setdefault(f"{name.upper()}_PORT", str(DEFAULT_PORTS[name]))
    for name in SERVICES:
        env.setdefault(f"{name.upper()}_URL", f"http://127.0.0.1:{env[f'{name.upper()}_PORT']}")
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{env['GATEWAY_PORT']}")
    env.setdefault("GATEWAY_URL", f"http://127.0.0.1:{env['GATEWAY_PORT']}")
    env.setdefault("MAIL_DIR", str(DATA / "mail"))
    database = start_database(env)

    supervisor = Supervisor(env)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not supervisor.to_terminal:
            say(f"logs go to {LOGS.relative_to(ROOT)}/ (LOG_LEVEL=INFO shows them here)")
        for name in PROCESSES:
            say(f"migrating {name}")
            migrate(name, env, supervisor.to_terminal)
        say(f"starting {', '.join(PROCESSES)}")
        for name in PROCESSES:
            supervisor.start(name)
        gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
        say("waiting for the gateway to be ready")
        started = time.monotonic()
        if wait_ready(gateway, 60):
            say(f"ready in {time.monotonic() - started:.1f} s")
        else:
            where = "above" if supervisor.to_terminal else f"in {LOGS.relative_to(ROOT)}/"
            say(f"the gateway is not ready after 60 s; see the logs {where}")
        role = env.get("PROCESS_ROLE") or "all"
        limits = "shared through REDIS_URL" if env.get("REDIS_URL") else "kept by each process"
        if role == "worker":
            print(
                "\n  Reciprocity's background work is running here (PROCESS_ROLE=worker): outbox deliveries to"
                f" {', '.join(env[f'{n.upper()}_URL'] for n in SERVICES)}, mail, expiry, code jobs."
                "\n  Ctrl-C stops everything.\n",
                flush=True,
            )
            supervisor.supervise()
            return
        print(
            f"""
  Reciprocity is running.
    console        {gateway}/console/   (log in with the admin key below)
    API            {gateway}/v1/...
    API docs       {gateway}/docs
    health         {gateway}/readyz
    admin key      {env["LOYALTY_ADMIN_KEY"]}
    database       {"embedded (.data/pg)" if database else "DATABASE_URL"}
    mail           {env.get("SMTP_HOST") or env["MAIL_DIR"] + " (.eml files; set SMTP_HOST to send)"}
    logs           {"this terminal" if supervisor.to_terminal else str(LOGS) + "/"}
    role           {role}{"" if role == "all" else " (PROCESS_ROLE)"}; limits {limits}

  Try:  curl -H "Authorization: Bearer {env["LOYALTY_ADMIN_KEY"]}" {gateway}/v1/points/rules
  Ctrl-C stops everything.
""",
            flush=True,
        )
        supervisor.supervise()
    except KeyboardInterrupt:
        pass
    except subprocess.CalledProcessError as exc:
        say(f"migration failed: {exc}")
        if not supervisor.to_terminal and exc.output:
            sys.stdout.write(exc.output.decode(errors="replace"))
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("stopping")
        supervisor.stop()
        if database is not None:
            database.cleanup()  # type: ignore[attr-defined]
        say("stopped")


if __name__ == "__main__":
    main()
