"""Survey invitations by email: invitations per second from the API call to the message accepted by an SMTP
server, for 10,000 invitations.

- The SMTP server is aiosmtpd in a child process of its own (it counts what it accepted, so duplicates would
  show), on loopback.
- The survey service runs as a real process (`python -m survey serve`), straight (no gateway), with its
  background sender on defaults (batches of 200, 4 SMTP connections).
- End to end: 10,000 `POST /v1/surveys/{id}/invitations` (64 clients, each a different customer) from the
  first call until the service has recorded the 10,000th message as accepted by the server.
- Ceiling, same run, same server: the same kind of rendered messages sent raw with aiosmtplib over the same
  number of connections (the SMTP client and server alone, no database, no HTTP).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosmtplib
import asyncpg
import httpx

from scripts.benchlib import ROOT, CpuMeter, cpu_cell, fresh_database, platform, print_table, run_load
from tests.support.servers import free_port

INVITATIONS = 10_000
CONNECTIONS = 4
SENDER = "surveys@reciprocity.bench"


def serve_smtp(port: int) -> None:
    """Child process: an aiosmtpd server that accepts everything and prints how many messages it took."""
    from aiosmtpd.controller import Controller

    class Count:
        accepted = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.accepted += 1
            return "250 OK"

    # Blocked before the server's thread starts (threads inherit the mask), so sigwait receives them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    handler = Count()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()
    print(handler.accepted, flush=True)


class SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scripts.bench_survey", "smtp", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def stop(self) -> int:
        """Stops the server (by its PID) and returns how many messages it accepted."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        return int(out.strip().splitlines()[-1])


def _messages(count: int) -> list[tuple[str, bytes]]:
    from survey.rendering import invitation_message

    now = datetime.now(UTC)
    messages = []
    for i in range(count):
        token = uuid.uuid4().hex + uuid.uuid4().hex
        messages.append(
            (
                f"ceiling-{i}@example.com",
                invitation_message(
                    invitation_id=str(uuid.uuid4()),
                    sender=SENDER,
                    recipient=f"ceiling-{i}@example.com",
                    survey_name="How did we do?",
                    survey_url=f"http://127.0.0.1:8000/s/{token}",
                    unsubscribe_url=f"http://127.0.0.1:8000/s/{token}/unsubscribe",
                    reward_points=50,
                    expires_at=now + timedelta(days=30),
                    sent_at=now,
                ),
            )
        )
    return messages


async def ceiling(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Raw aiosmtplib sends over CONNECTIONS connections; returns seconds."""

    async def share(part: list[tuple[str, bytes]]) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
            for recipient, message in part:
                await client.sendmail(SENDER, [recipient], message)

    started = time.perf_counter()
    await asyncio.gather(*(share(messages[i::CONNECTIONS]) for i in range(CONNECTIONS)))
    return time.perf_counter() - started


async def wait_until_sent(database_url: str, count: int, timeout: float) -> float:
    """Polls the service's own record (marked right after the server's 250); returns when all were."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            sent = await connection.fetchval("SELECT count(*) FROM survey.invitations WHERE status = 'sent'")
            if sent >= count:
                return time.perf_counter()
            await asyncio.sleep(0.1)
        raise TimeoutError(f"only {sent} of {count} sent after {timeout} s")
    finally:
        await connection.close()


async def ceiling_run(messages: list[tuple[str, bytes]]) -> tuple[float, int, float]:
    smtp = SmtpServer()
    try:
        with CpuMeter(own=True) as meter:
            seconds = await ceiling(smtp.port, messages)
    finally:
        accepted = smtp.stop()
    return seconds, accepted, meter.ms_per_op(len(messages))


async def service_run() -> tuple[Any, float, int, float]:
    smtp = SmtpServer()
    try:
        async with fresh_database() as database_url:
            env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port), "SMTP_FROM": SENDER}
            async with platform(database_url, services=["survey"], gateway=False, extra_env=env) as stack:
                base = stack.url("survey")
                async with httpx.AsyncClient(base_url=base, headers=stack.internal_headers, timeout=60) as client:
                    survey = (
                        await client.post(
                            "/v1/surveys",
                            json={
                                "name": "How did we do?",
                                "questions": [{"id": "nps", "type": "nps", "text": "Recommend us?", "required": True}],
                                "reward_points": 50,
                                "cooldown_days": 0,
                            },
                        )
                    ).json()
                requests = [
                    {
                        "method": "POST",
                        "url": f"{base}/v1/surveys/{survey['id']}/invitations",
                        "headers": stack.internal_headers,
                        "json": {"customer_id": f"bench-{i}", "email": f"bench-{i}@example.com"},
                    }
                    for i in range(INVITATIONS)
                ]
                meter = CpuMeter.current()
                meter.start()
                started = time.perf_counter()
                load = asyncio.create_task(
                    asyncio.to_thread(
                        run_load,
                        "POST /v1/surveys/{id}/invitations",
                        requests,
                        concurrency=64,
                        duration=600,
                        warmup=0,
                        cycle=False,
                    )
                )
                all_sent = await wait_until_sent(database_url, INVITATIONS, timeout=180)
                cpu = meter.stop()
                api = await load
    finally:
        accepted = smtp.stop()
    return api, all_sent - started, accepted, cpu


async def bench() -> None:
    messages = await asyncio.to_thread(_messages, INVITATIONS)
    before, accepted_before, cpu_before = await ceiling_run(messages)
    api, end_to_end, accepted_by_service, cpu = await service_run()
    after, accepted_after, cpu_after = await ceiling_run(messages)
    best = min(before, after)
    rate = INVITATIONS / best

    rows: list[list[Any]] = [
        [f"ceiling before: raw aiosmtplib, {INVITATIONS:,} rendered messages, {CONNECTIONS} connections", before,
         INVITATIONS / before, cpu_cell(cpu_before), f"{best / before:.0%}"],
        ["ceiling after (same)", after, INVITATIONS / after, cpu_cell(cpu_after), f"{best / after:.0%}"],
        ["API only: POST /v1/surveys/{id}/invitations answered 201 (64 clients)", api.seconds, api.rps,
         cpu_cell(api.cpu_ms_per_op), f"{api.rps / rate:.0%}"],
        ["end to end: first API call -> 10,000th message accepted by the SMTP server", end_to_end,
         INVITATIONS / end_to_end, cpu_cell(cpu * 1000 / INVITATIONS), f"{best / end_to_end:.0%}"],
    ]  # fmt: skip
    print_table(
        f"{INVITATIONS:,} survey invitations by email, SMTP server aiosmtpd in its own process, same run "
        "(CPU: the client's own process for the ceilings; the survey service and its database backends otherwise)",
        ["what", "seconds", "per second", "CPU ms/message", "vs. best ceiling"],
        rows,
    )
    print(
        f"\nAPI: p50 {api.p50_ms:.1f} ms, p99 {api.p99_ms:.1f} ms, errors {api.errors}, statuses {api.statuses}; "
        f"messages the server accepted from the service: {accepted_by_service:,} "
        f"(ceiling runs: {accepted_before:,}, {accepted_after:,})",
        flush=True,
    )


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "smtp":
        serve_smtp(int(sys.argv[2]))
    else:
        main()
