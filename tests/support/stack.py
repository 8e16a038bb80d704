"""The platform as real processes (`python -m <name> serve`, as `make run` starts them), stopped by PID:
for tests of whole-system behaviour and for the benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support.servers import ServiceProcess, free_port

SERVICES = ("coupon", "points", "recommend", "survey")


def stack_environment(base: dict[str, str]) -> tuple[dict[str, str], dict[str, int]]:
    """`base` plus ports and URLs for every process on free loopback ports."""
    ports = {name: free_port() for name in (*SERVICES, "gateway")}
    env = {
        **base,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['gateway']}",
        **{f"{n.upper()}_URL": f"http://127.0.0.1:{ports[n]}" for n in SERVICES},
        **{f"{n.upper()}_PORT": str(ports[n]) for n in (*SERVICES, "gateway")},
    }
    return env, ports


@asynccontextmanager
async def process_stack(
    base_env: dict[str, str],
    logs: Path,
    services: Sequence[str] = SERVICES,
    gateway: bool = True,
    ready_timeout: float = 60.0,
) -> AsyncIterator[dict[str, ServiceProcess]]:
    """Each process logs to `logs/<name>.log` (its stdout and stderr)."""
    env, ports = stack_environment(base_env)
    names = [*services, "gateway"] if gateway else list(services)
    processes = {n: ServiceProcess(n, ports[n], env, logs / f"{n}.log") for n in names}
    try:
        for name, process in processes.items():
            process.start()
            # One at a time: migrations of a fresh database are quicker without contention. A gateway in front
            # of only some services is never "ready" (it checks them all), so wait for it to be alive.
            partial = name == "gateway" and set(services) != set(SERVICES)
            await process.wait_ready(ready_timeout, path="/healthz" if partial else "/readyz")
        yield processes
    finally:
        for process in processes.values():
            process.stop()
