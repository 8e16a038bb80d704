"""What every benchmark shares: a fresh database, the platform's processes started as real children (stopped
by PID), a closed-loop HTTP load generator running in its own process, and table printing.

Figures on these 2-core machines drift 10-20% between runs: each benchmark measures its ceiling in the same
run and reports the ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

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
        yield Stack(processes["gateway" if gateway else services[0]].env, processes)


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


def run_load(
    label: str,
    requests: Sequence[dict[str, Any]],
    *,
    concurrency: int = 64,
    duration: float = 10.0,
    warmup: float = 2.0,
    cycle: bool = True,
    ok_statuses: Sequence[int] = (200, 201, 202),
) -> LoadResult:
    """Closed loop: `concurrency` clients, each sending the next request of `requests` as soon as its last
    one answered, for `duration` seconds after `warmup`. Runs in a child process (scripts/loadgen.py) so the
    generator does not share an interpreter with anything it measures.

    A request is `{"method", "url", "headers"?, "json"?}`. With `cycle=False` the run also stops when the
    list is used up (for requests that must be unique, such as redemptions with their own reference).
    """
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump(
            {
                "requests": list(requests),
                "concurrency": concurrency,
                "duration": duration,
                "warmup": warmup,
                "cycle": cycle,
                "ok": list(ok_statuses),
            },
            spec,
        )
    try:
        out = subprocess.run(
            [sys.executable, "-m", "scripts.loadgen", spec.name], capture_output=True, text=True, cwd=ROOT, check=True
        )
    finally:
        os.unlink(spec.name)
    data = json.loads(out.stdout)
    return LoadResult(label=label, **data)


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


def result_row(result: LoadResult, baseline: LoadResult | None = None) -> list[Any]:
    ratio = f"{result.rps / baseline.rps:.0%}" if baseline and baseline.rps else "-"
    return [result.label, result.rps, result.p50_ms, result.p99_ms, result.errors, ratio]


LOAD_HEADERS = ["what", "req/s", "p50 ms", "p99 ms", "errors", "vs. baseline"]
