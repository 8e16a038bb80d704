"""`make run`'s supervisor (scripts/run.py) as a user runs it: everything ready within a minute, the docs list
the routes, a process that dies is restarted, and SIGTERM stops it all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ARTIFACTS, Platform
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


async def wait_ok(url: str, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                response = await client.get(url, timeout=10)
                if response.status_code == 200:
                    return response
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not 200 within {timeout} s")


def child_serving(supervisor: psutil.Process, name: str) -> psutil.Process:
    for child in supervisor.children():
        try:
            if child.cmdline()[1:4] == ["-m", name, "serve"]:
                return child
        except psutil.Error:  # exited and not yet reaped by the supervisor
            continue
    raise LookupError(name)


async def wait_printed(log: Path, text: str, timeout: float = 30) -> str:
    """The runner's output once it holds `text` (or after `timeout`): it prints the URLs after its own readiness
    check, which may come a moment after the test's."""
    deadline = time.monotonic() + timeout
    while True:
        printed = await asyncio.to_thread(log.read_text)
        if text in printed or time.monotonic() > deadline:
            return printed
        await asyncio.sleep(0.2)


async def test_run_supervises_the_platform(platform: Platform) -> None:
    ports = {name: free_port() for name in ("gateway", "coupon", "points", "recommend", "survey")}
    env = {
        **os.environ,
        **platform.env,
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **{f"{name.upper()}_URL": f"http://127.0.0.1:{port}" for name, port in ports.items() if name != "gateway"},
        "MAIL_DIR": str(ARTIFACTS / "run-mail"),
    }
    env.pop("LOG_LEVEL", None)  # as a new user runs it: INFO, into files under .data/logs
    (ROOT / ".data" / "logs" / "gateway.log").unlink(missing_ok=True)
    log = (ARTIFACTS / "logs").joinpath("make-run.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        runner = subprocess.Popen(  # noqa: ASYNC220 (started once; the test then only polls it)
            [sys.executable, "scripts/run.py"], cwd=ROOT, env=env, stdout=output, stderr=output
        )
    try:
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        await wait_ok(gateway + "/readyz", timeout=180)  # five migrations and five processes on a busy machine
        docs = await wait_ok(gateway + "/docs", timeout=5)
        assert "swagger" in docs.text.lower()
        paths = (await wait_ok(gateway + "/openapi.json", timeout=30)).json()["paths"]
        for path in (
            "/v1/purchases",
            "/v1/customers/{customer_id}/points",
            "/v1/coupon-campaigns",
            "/v1/customers/{customer_id}/recommendations",
            "/v1/surveys",
        ):
            assert path in paths, path
        printed = await wait_printed(log, f"{gateway}/console/")  # printed once run.py saw the gateway ready too
        assert platform.env["LOYALTY_ADMIN_KEY"] in printed and f"{gateway}/docs" in printed
        assert f"{gateway}/console/" in printed
        # the processes' logs went to their files, not into the terminal between the progress lines
        assert (ROOT / ".data" / "logs" / "gateway.log").exists()
        assert "[run] migrating coupon" in printed
        logged = (ROOT / ".data" / "logs" / "gateway.log").read_text()
        assert "Application startup complete" in logged and "Application startup complete" not in printed

        supervisor = psutil.Process(runner.pid)
        points = child_serving(supervisor, "points")
        points.kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if child_serving(supervisor, "points").pid != points.pid:
                    break
            except LookupError:
                pass
            await asyncio.sleep(0.2)
        await wait_ok(f"http://127.0.0.1:{ports['points']}/readyz", timeout=30)
        assert child_serving(supervisor, "points").pid != points.pid

        children = supervisor.children()
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=30) == 0
        assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
    finally:
        if runner.poll() is None:
            runner.kill()
            for child in psutil.Process(runner.pid).children(recursive=True) if psutil.pid_exists(runner.pid) else []:
                child.kill()
