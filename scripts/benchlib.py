"""What every benchmark shares: a fresh database, the platform's processes started as real children (stopped
by PID), an HTTP load generator running in its own process (closed loop, or open loop at a fixed rate), the
CPU time the platform spent per operation, and table printing.

Figures on these 2-core machines drift 10-20% between runs (2-3x when other work shares the machine): each
benchmark measures its ceiling in the same run and reports the ratio, and every row carries CPU per operation:
the user+system CPU time of the platform's processes (gateway, services, and the PostgreSQL backends serving
the benchmark's database) while the row was measured, divided by the operations done. It moves far less
than a rate when the machine is busy, and says where the time went. The load generator's own CPU is not
counted; a shared server's background processes (WAL writer, checkpointer) are not either.

A new benchmark row: `run_load(...)` inside `platform(...)` measures CPU by itself; for work done in the
benchmark's own process, wrap it in `with CpuMeter.current(own=True) as meter:` and read `meter.ms_per_op(n)`.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kit.embedded import start_embedded_postgres  # noqa: E402
from tests.support.servers import ServiceProcess  # noqa: E402
from tests.support.stack import SERVICES, process_stack  # noqa: E402

INTERNAL_TOKEN = "bench-internal-token-0123456789"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef"


def server_url() -> str:
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    return str(start_embedded_postgres(ROOT / ".data" / "bench-pg").get_uri())


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    base = server_url()
    name = f"reciprocity_bench_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(base)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    parts = urlsplit(base)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    finally:
        connection = await asyncpg.connect(base)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def postgres_backends(database: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to `database` (their process title names it)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        title = " ".join(process.info.get("cmdline") or [])
        if title.startswith("postgres: ") and f" {database} " in title:
            found.append(process.pid)
    return found


def _cpu_seconds(pids: set[int]) -> dict[int, float]:
    times: dict[int, float] = {}
    for pid in pids:
        try:
            cpu = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        times[pid] = cpu.user + cpu.system
    return times


def _reaped_children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """User+system CPU seconds of a set of processes between `start()` and `stop()`.

    The set is found at both moments (the platform's processes and their children, PostgreSQL backends of the
    database, and optionally this process itself); a process that appeared in between counts from zero, one
    that ended in between is lost (pools keep their connections, so that is rare)."""

    roots: Sequence[int] = ()
    database: str | None = None
    own: bool = False
    # child processes this one started and reaped meanwhile (a pgbench run), from the kernel's rusage
    reaped_children: bool = False
    seconds: float = 0.0
    _before: dict[int, float] = field(default_factory=dict)
    _children_before: float = 0.0

    _active: ClassVar[CpuMeter | None] = None  # the platform being measured, set by `platform()`

    def pids(self) -> set[int]:
        pids = set(self.roots)
        for root in self.roots:
            with suppress(psutil.Error):
                pids.update(child.pid for child in psutil.Process(root).children(recursive=True))
        if self.database:
            pids.update(postgres_backends(self.database))
        if self.own:
            pids.add(os.getpid())
        return pids

    def start(self) -> None:
        self._before = _cpu_seconds(self.pids())
        self._children_before = _reaped_children_seconds()

    def stop(self) -> float:
        after = _cpu_seconds(self.pids() | set(self._before))
        self.seconds = sum(max(0.0, t - self._before.get(pid, 0.0)) for pid, t in after.items())
        if self.reaped_children:
            self.seconds += _reaped_children_seconds() - self._children_before
        return self.seconds

    def ms_per_op(self, operations: int) -> float:
        return self.seconds * 1000 / operations if operations else float("nan")

    def __enter__(self) -> CpuMeter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def current(cls, *, own: bool = False, extra: Sequence[int] = ()) -> CpuMeter:
        """A meter over the platform that `platform()` is running (plus this process when `own`)."""
        active = cls._active
        roots = [*(active.roots if active else ()), *extra]
        return cls(roots=roots, database=active.database if active else None, own=own)

    @classmethod
    def for_database(cls, database_url: str, *, own: bool = False, reaped_children: bool = False) -> CpuMeter:
        """The backends of this database (and this process, when `own`): for ceilings measured without the platform."""
        return cls(database=_database_name(database_url), own=own, reaped_children=reaped_children)


@dataclass
class Stack:
    env: dict[str, str]
    processes: dict[str, ServiceProcess]

    def url(self, name: str) -> str:
        return self.processes[name].url

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    @property
    def internal_headers(self) -> dict[str, str]:
        return {"X-Internal-Token": INTERNAL_TOKEN}


@asynccontextmanager
async def platform(
    database_url: str,
    services: Sequence[str] = SERVICES,
    gateway: bool = True,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """The named services (and the gateway) as real processes, as `make run` starts them."""
    env = {
        "DATABASE_URL": database_url,
        "LOYALTY_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "LOYALTY_ADMIN_KEY": ADMIN_KEY,
        "LOYALTY_JWT_SECRET": JWT_SECRET,
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PARTNER_PER_MINUTE": "100000000",
        "RATE_LIMIT_CUSTOMER_PER_MINUTE": "100000000",
        **(extra_env or {}),
    }
    async with process_stack(env, ROOT / ".data" / "bench-logs", services, gateway) as processes:
        pids = [p.process.pid for p in processes.values() if p.process is not None]
        previous = CpuMeter._active
        CpuMeter._active = CpuMeter(roots=pids, database=_database_name(database_url))
        try:
            yield Stack(processes["gateway" if gateway else services[0]].env, processes)
        finally:
            CpuMeter._active = previous


@dataclass
class LoadResult:
    label: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    cpu_ms_per_op: float = float("nan")


def run_load(
    label: str,
    requests: Sequence[dict[str, Any]],
    *,
    concurrency: int = 64,
    duration: float = 10.0,
    warmup: float = 2.0,
    cycle: bool = True,
    ok_statuses: Sequence[int] = (200, 201, 202),
    rate: float | None = None,
    cpu: CpuMeter | None = None,
) -> LoadResult:
    """Closed loop: `concurrency` clients, each sending the next request of `requests` as soon as its last
    one answered, for `duration` seconds after `warmup`; with `rate`, open loop at that many requests a
    second. Runs in a child process (scripts/loadgen.py) so the generator does not share an interpreter
    with anything it measures.

    A request is `{"method", "url", "headers"?, "json"?}`. With `cycle=False` the run also stops when the
    list is used up (for requests that must be unique, such as redemptions with their own reference).
    CPU per operation is measured over the same window with `cpu`, by default the running platform's.
    """
    meter = cpu or CpuMeter.current()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump(
            {
                "requests": list(requests),
                "concurrency": concurrency,
                "duration": duration,
                "warmup": warmup,
                "cycle": cycle,
                "ok": list(ok_statuses),
                "rate": rate,
            },
            spec,
        )
    try:
        generator = subprocess.Popen(
            [sys.executable, "-m", "scripts.loadgen", spec.name], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert generator.stdout is not None
        result = ""
        for line in generator.stdout:
            if line.strip() == "start":
                meter.start()
            elif line.strip() == "stop":
                meter.stop()
            else:
                result = line
        if generator.wait() != 0:
            raise RuntimeError(f"the load generator failed ({generator.returncode})")
    finally:
        os.unlink(spec.name)
    data = json.loads(result)
    return LoadResult(label=label, **data, cpu_ms_per_op=meter.ms_per_op(data["requests"]))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (so it can be pasted into docs/benchmarks.md as it is)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = [f"\n### {title}\n", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def cpu_cell(ms_per_op: float) -> str:
    return "-" if ms_per_op != ms_per_op else f"{ms_per_op:.2f}"


def result_row(result: LoadResult, baseline: LoadResult | None = None) -> list[Any]:
    ratio = f"{result.rps / baseline.rps:.0%}" if baseline and baseline.rps else "-"
    cpu = cpu_cell(result.cpu_ms_per_op)
    return [result.label, result.rps, result.p50_ms, result.p99_ms, result.errors, cpu, ratio]


LOAD_HEADERS = ["what", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms/op", "vs. baseline"]
