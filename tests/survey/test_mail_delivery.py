"""The background sender against real SMTP servers that are down, refuse, or come back; a sender that dies
mid-batch; the .eml fallback; and the per-caller send quota. Each runs on a database of its own, so its
sender does not touch the other tests' mail."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller

from kit.db import Database
from kit.migrations import upgrade
from kit.settings import asyncpg_url
from survey import service
from survey.app import MIGRATIONS_DIR, create_app, mail_config
from survey.mail import MailSender
from survey.rendering import invitation_message
from survey.schemas import SurveyCreate
from survey.settings import SurveySettings
from tests.conftest import INTERNAL_TOKEN
from tests.support.database import create_database, drop_database, server_url
from tests.support.servers import InProcessServer, free_port
from tests.survey.conftest import NPS_AND_RATING, address, create_survey, invite, links, uid


@dataclass
class Inbox:
    """An SMTP server that refuses recipients starting with `bounce-` (550) and keeps the rest."""

    port: int = field(default_factory=free_port)
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("bounce-"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def to(self, recipient: str) -> list[EmailMessage]:
        return [m for m in self.messages if recipient in str(m["To"])]


def settings(url: str, **overrides: Any) -> SurveySettings:
    values = {
        "DATABASE_URL": url,
        "LOYALTY_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "PUBLIC_BASE_URL": "http://survey.test",
        "SMTP_FROM": "Surveys <surveys@reciprocity.test>",
        "MAIL_POLL_SECONDS": "0.05",
        "MAIL_RETRY_BASE_SECONDS": "0.2",
        "MAIL_RETRY_MAX_SECONDS": "1",
        "SMTP_TIMEOUT_SECONDS": "2",
        "SURVEY_SEND_QUOTA_PER_DAY": "3",
        "POINTS_URL": "http://127.0.0.1:9",
        "COUPON_URL": "http://127.0.0.1:9",
        "DB_POOL_SIZE": "3",
        **overrides,
    }
    return SurveySettings(**values)


@pytest.fixture(scope="module")
async def own_database() -> AsyncIterator[str]:
    base = await asyncio.to_thread(server_url)
    url, name = await create_database(base)
    yield url
    await drop_database(base, name)


@dataclass
class Instance:
    client: httpx.AsyncClient
    inbox: Inbox
    controller: Controller


@pytest.fixture(scope="module")
async def instance(own_database: str) -> AsyncIterator[Instance]:
    """A survey service whose SMTP port is closed until a test starts the server on it."""
    inbox = Inbox()
    app = create_app(
        settings(
            own_database, SMTP_HOST="127.0.0.1", SMTP_PORT=str(inbox.port), POST_PURCHASE_SURVEY_DELAY_SECONDS="1.5"
        )
    )
    server = await InProcessServer(app).start()
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port, enable_SMTPUTF8=True)
    client = httpx.AsyncClient(base_url=server.url, headers={"X-Internal-Token": INTERNAL_TOKEN}, timeout=30)
    yield Instance(client, inbox, controller)
    await client.aclose()
    await server.stop()
    if getattr(controller, "server", None) is not None:
        controller.stop()


async def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def status(client: httpx.AsyncClient, survey_id: str, invitation_id: str) -> dict[str, Any]:
    return (await client.get(f"/v1/surveys/{survey_id}/invitations/{invitation_id}")).json()  # type: ignore[no-any-return]


async def test_sender_retries_while_the_server_is_down_and_delivers_when_it_is_back(instance: Instance) -> None:
    client, inbox = instance.client, instance.inbox
    survey = await create_survey(client)
    recipient = address()
    created = await invite(client, survey["id"], uid(), recipient)
    assert created.status_code == 201
    invitation_id = created.json()["invitation_id"]

    retried = await wait_for(lambda: _status_where(client, survey["id"], invitation_id, lambda s: s["attempts"] >= 2))
    assert retried["status"] == "queued"
    assert "connect" in retried["last_error"].lower()

    instance.controller.start()
    await wait_for(lambda: _async(inbox.to(recipient)))
    delivered = await wait_for(
        lambda: _status_where(client, survey["id"], invitation_id, lambda s: s["status"] == "sent")
    )
    assert delivered["sent_at"] is not None
    assert len(inbox.to(recipient)) == 1
    link, _ = links(inbox.to(recipient)[0])
    assert link.startswith("http://survey.test/s/")


async def test_hard_bounce_fails_the_invitation_and_suppresses_the_customer(instance: Instance) -> None:
    client = instance.client
    ensure_server(instance)
    survey = await create_survey(client)
    customer = uid()
    created = await invite(client, survey["id"], customer, f"bounce-{uuid.uuid4().hex[:8]}@example.com")
    invitation_id = created.json()["invitation_id"]
    failed = await wait_for(
        lambda: _status_where(client, survey["id"], invitation_id, lambda s: s["status"] == "failed")
    )
    assert failed["last_error"].startswith("550")
    again = await invite(client, survey["id"], customer)
    assert again.status_code == 409
    assert again.json()["code"] == "customer_opted_out"


def ensure_server(instance: Instance) -> None:
    if getattr(instance.controller, "server", None) is None:
        instance.controller.start()


# an address beyond ASCII is one the gateway accepts: its buyer is invited like any other (SMTPUTF8)
@pytest.mark.parametrize("local_part", ["", "josé."])
async def test_a_purchase_invitation_goes_out_when_its_delay_has_passed(instance: Instance, local_part: str) -> None:
    ensure_server(instance)
    client = instance.client
    await create_survey(client, name="After your purchase", send_after_purchase=True, cooldown_days=30)
    customer, recipient = uid(), local_part + address()
    event = {
        "id": str(uuid.uuid4()),
        "type": "purchase.created",
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {
            "purchase_id": uid("p"),
            "customer_id": customer,
            "email": recipient,
            "currency": "EUR",
            "total": "12.50",
            "items": [{"product_id": "p", "name": "n", "category": "misc", "unit_price": "12.50", "quantity": 1}],
        },
    }
    posted = time.monotonic()
    assert (await client.post("/internal/events", json=event)).status_code == 200
    await asyncio.sleep(0.5)
    assert instance.inbox.to(recipient) == []  # not before the delay (1.5 s here)
    await wait_for(lambda: _async(instance.inbox.to(recipient)))
    assert time.monotonic() - posted >= 1.5
    [message] = instance.inbox.to(recipient)
    link, _ = links(message)
    assert link.startswith("http://survey.test/s/")


async def test_send_quota_per_caller(instance: Instance) -> None:
    client = instance.client
    survey = await create_survey(client)
    partner = {"X-Caller-Kind": "partner", "X-Caller-Id": uid("key"), "X-Caller-Scopes": "surveys:write"}
    body = lambda: {"customer_id": uid(), "email": address()}  # noqa: E731
    url = f"/v1/surveys/{survey['id']}/invitations"
    for _ in range(3):
        assert (await client.post(url, json=body(), headers=partner)).status_code == 201
    refused = await client.post(url, json=body(), headers=partner)
    assert refused.status_code == 429
    assert refused.json()["code"] == "send_quota_exceeded"
    assert int(refused.headers["Retry-After"]) > 0
    other = {"X-Caller-Kind": "partner", "X-Caller-Id": uid("key"), "X-Caller-Scopes": "surveys:write"}
    assert (await client.post(url, json=body(), headers=other)).status_code == 201
    admin = {"X-Caller-Kind": "admin", "X-Caller-Id": "admin"}
    for _ in range(4):
        assert (await client.post(url, json=body(), headers=admin)).status_code == 201


async def _status_where(client: httpx.AsyncClient, survey_id: str, invitation_id: str, test: Any) -> Any:
    current = await status(client, survey_id, invitation_id)
    return current if test(current) else None


async def _async(value: Any) -> Any:
    return value


# A sender that dies mid-batch, and the .eml fallback: the sender driven directly, with no service running.


@pytest.fixture(scope="module")
async def quiet_database() -> AsyncIterator[str]:
    base = await asyncio.to_thread(server_url)
    url, name = await create_database(base)
    await asyncio.to_thread(upgrade, MIGRATIONS_DIR, asyncpg_url(url), "survey")
    yield url
    await drop_database(base, name)


async def _invite_directly(database: Database, config: SurveySettings, count: int) -> list[str]:
    policy = service.InvitePolicy(config.public_base_url, config.smtp_from, 30, 0)
    async with database.transaction() as session:
        created = await service.create_survey(
            session,
            SurveyCreate.model_validate({"name": "Direct", "questions": NPS_AND_RATING, "cooldown_days": 0}),
        )
    recipients = [address() for _ in range(count)]
    for recipient in recipients:
        async with database.transaction() as session:
            await service.invite(session, policy, created.id, uid(), recipient, caller=None)
    return recipients


class _Killed(Exception):
    """Stands in for the process dying between two messages."""


async def _count_sent(url: str, wanted: int) -> bool:
    connection = await asyncpg.connect(url, server_settings={"search_path": "survey"})
    try:
        return bool(await connection.fetchval("SELECT count(*) FROM mail_outbox WHERE status = 'sent'") == wanted)
    finally:
        await connection.close()


async def test_a_sender_that_dies_mid_batch_loses_nothing_and_sends_nothing_twice(quiet_database: str) -> None:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port, enable_SMTPUTF8=True)
    controller.start()
    config = settings(
        quiet_database, SMTP_HOST="127.0.0.1", SMTP_PORT=str(inbox.port), MAIL_LEASE_SECONDS="1", MAIL_CONNECTIONS="1"
    )
    database = await Database.connect(config.database_url, "survey")
    try:
        recipients = await _invite_directly(database, config, 5)

        class DiesAfterTwo(MailSender):
            sent = 0

            async def _send_one(self, client: Any, row: Any) -> bool:
                if self.sent == 2:
                    # Dies once the first two are recorded as sent (outside the at-least-once window).
                    await wait_for(lambda: _count_sent(quiet_database, 2))
                    raise _Killed
                self.sent += 1
                return await super()._send_one(client, row)

        with pytest.raises(_Killed):
            await DiesAfterTwo(database, mail_config(config)).run_once()
        assert len(inbox.messages) == 2

        # Another sender (the restarted process) finds the rest claimed until the lease runs out...
        successor = MailSender(database, mail_config(config))
        assert await successor.run_once() == 0
        await asyncio.sleep(1.1)
        # ...and then sends exactly what had not gone out.
        assert await successor.run_once() == 3
        assert sorted(str(m["To"]) for m in inbox.messages) == sorted(recipients)
        connection = await asyncpg.connect(quiet_database, server_settings={"search_path": "survey"})
        try:
            states = await connection.fetch("SELECT status, count(*) FROM invitations GROUP BY status")
        finally:
            await connection.close()
        assert {r["status"]: r["count"] for r in states} == {"sent": 5}
    finally:
        await database.dispose()
        controller.stop()


async def test_without_smtp_host_messages_are_written_as_eml_files(quiet_database: str, tmp_path: Path) -> None:
    config = settings(quiet_database, SMTP_HOST="", MAIL_DIR=str(tmp_path / "mail"))
    database = await Database.connect(config.database_url, "survey")
    try:
        recipients = await _invite_directly(database, config, 2)
        await MailSender(database, mail_config(config)).run_until_idle()
    finally:
        await database.dispose()
    files = sorted((tmp_path / "mail").glob("*.eml"))
    written = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]
    assert sorted(str(m["To"]) for m in written) == sorted(recipients)
    link, _ = links(written[0])  # type: ignore[arg-type]
    assert link.startswith("http://survey.test/s/")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("How was your order?", "How was your order? A minute of your time"),
        ("Spring feedback", "Spring feedback: a minute of your time"),
        ("Merci à vous !", "Merci à vous ! A minute of your time"),
    ],
)
def test_the_subject_reads_as_a_sentence(name: str, expected: str) -> None:
    now = datetime.now(UTC)
    raw = invitation_message(
        invitation_id=uid(),
        sender="Shop <shop@example.test>",
        recipient="someone@example.test",
        survey_name=name,
        survey_url="http://survey.test/s/x",
        unsubscribe_url="http://survey.test/s/x/unsubscribe",
        reward_points=None,
        expires_at=now,
        sent_at=now,
    )
    assert str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"]) == expected
