"""Who may be invited: the per-customer throttle across surveys, the opt-out list, and purchase-driven invitations."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.conftest import Platform
from tests.support.mail import Mailbox
from tests.survey.conftest import address, create_survey, invite, links, uid


async def test_throttle_spans_surveys_and_holds_under_concurrency(platform: Platform, admin: httpx.AsyncClient) -> None:
    slow = await create_survey(admin, cooldown_days=90)
    other = await create_survey(admin, cooldown_days=30)
    customer = uid()
    assert (await invite(admin, slow["id"], customer)).status_code == 201

    again = await invite(admin, other["id"], customer)
    assert again.status_code == 409
    assert again.json()["code"] == "survey_throttled"
    assert again.json()["next_invitation_at"] is not None

    # A survey without a cooldown may invite again at once.
    relaxed = await create_survey(admin, cooldown_days=0)
    assert (await invite(admin, relaxed["id"], customer)).status_code == 201

    fresh = uid()
    async with platform.client(limits=httpx.Limits(max_connections=50)) as client:
        answers = await asyncio.gather(*(invite(client, slow["id"], fresh) for _ in range(15)))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 14


async def test_unsubscribe_link_opts_out_and_cancels_what_is_waiting(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    survey = await create_survey(admin, cooldown_days=0)
    customer, email = uid(), address()
    assert (await invite(admin, survey["id"], customer, email)).status_code == 201
    _, token = links((await mailbox.wait_for(email))[0])

    async with platform.client(None) as public:
        confirm = await public.get(f"/s/{token}/unsubscribe")
        assert confirm.status_code == 200
        assert '<form method="post"' in confirm.text
        # Showing the confirmation changes nothing (mail scanners follow links). This second invitation
        # waits in the outbox (the server answers 451) when the customer opts out, and must not go out.
        mailbox.refuse = True
        try:
            waiting = await invite(admin, survey["id"], customer, address())
            assert waiting.status_code == 201

            # RFC 8058 one-click: a POST to the List-Unsubscribe URL.
            done = await public.post(
                f"/s/{token}/unsubscribe",
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        finally:
            mailbox.refuse = False
        assert done.status_code == 200
        assert "unsubscribed" in done.text
        assert (await public.post(f"/s/{token}/unsubscribe")).status_code == 200  # twice is fine
        assert (await public.get("/s/unknown-token-value/unsubscribe")).status_code == 404

    refused = await invite(admin, survey["id"], customer, address())
    assert refused.status_code == 409
    assert refused.json()["code"] == "customer_opted_out"
    # The address is suppressed too, under any customer id.
    assert (await invite(admin, survey["id"], uid(), email)).json()["code"] == "customer_opted_out"
    status = await admin.get(f"/v1/surveys/{survey['id']}/invitations/{waiting.json()['invitation_id']}")
    assert status.json()["status"] == "cancelled"


@pytest.mark.own_platform(services=["survey", "gateway"])  # the latest post-purchase survey is programme-wide
async def test_purchase_schedules_one_invitation_to_the_post_purchase_survey(
    platform: Platform, admin: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    survey = await create_survey(admin, name="After your purchase", send_after_purchase=True, cooldown_days=60)
    assert survey["send_after_purchase"] is True
    customer = uid()

    def event(customer_id: str, email: str | None) -> dict:  # type: ignore[type-arg]
        return {
            "id": str(uuid.uuid4()),
            "type": "purchase.created",
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": {
                "purchase_id": uid("p"),
                "customer_id": customer_id,
                "email": email,
                "currency": "EUR",
                "total": "12.50",
                "items": [{"product_id": "p", "name": "n", "category": "misc", "unit_price": "12.50", "quantity": 1}],
            },
        }

    async with platform.service_client("survey") as service:
        first = event(customer, address())
        assert (await service.post("/internal/events", json=first)).status_code == 200
        assert (await service.post("/internal/events", json=first)).json()["status"] == "duplicate"
        # Another purchase within the cooldown, and one without an email: nothing to do, but handled.
        assert (await service.post("/internal/events", json=event(customer, address()))).status_code == 200
        no_email = uid()
        assert (await service.post("/internal/events", json=event(no_email, None))).status_code == 200

    rows = await db.fetch("SELECT survey_id, status, source, send_at FROM invitations WHERE customer_id = $1", customer)
    assert len(rows) == 1
    assert str(rows[0]["survey_id"]) == survey["id"]
    assert rows[0]["source"] == "purchase"
    assert rows[0]["status"] == "queued"
    # Sent after the configured delay (default a day), not now.
    assert rows[0]["send_at"] > datetime.now(UTC) + timedelta(hours=23)
    assert await db.fetchval("SELECT count(*) FROM invitations WHERE customer_id = $1", no_email) == 0


async def test_bad_surveys_and_invitations_are_refused(admin: httpx.AsyncClient) -> None:
    choice_without_options = [{"id": "q", "type": "choice", "text": "Pick", "required": True}]
    duplicate_ids = [{"id": "q", "type": "nps", "text": "A"}, {"id": "q", "type": "text", "text": "B"}]
    for questions in (choice_without_options, duplicate_ids, [], [{"id": "q", "type": "stars", "text": "?"}]):
        response = await admin.post("/v1/surveys", json={"name": "Bad", "questions": questions})
        assert response.status_code == 422, questions
        assert response.json()["code"] == "validation_error"
    nul = await admin.post(
        "/v1/surveys", json={"name": "a\x00b", "questions": [{"id": "a", "type": "nps", "text": "?"}]}
    )
    assert nul.status_code == 422
    assert (await admin.get("/v1/surveys", params={"cursor": "WyJ4Il0"})).status_code == 422
    unknown_field = await admin.post(
        "/v1/surveys", json={"name": "x", "questions": [{"id": "a", "type": "nps", "text": "?"}], "colour": "red"}
    )
    assert unknown_field.status_code == 422

    survey = await create_survey(admin)
    assert (await admin.get(f"/v1/surveys/{survey['id']}")).json()["questions"][3]["options"] == [
        "A friend",
        "Search",
        "Social media",
    ]
    for body in ({"customer_id": "c 1", "email": "a@b.co"}, {"customer_id": uid(), "email": "not-an-email"}):
        assert (await admin.post(f"/v1/surveys/{survey['id']}/invitations", json=body)).status_code == 422
    missing = await admin.post(
        f"/v1/surveys/{uuid.uuid4()}/invitations", json={"customer_id": uid(), "email": "a@b.co"}
    )
    assert missing.status_code == 404

    listed = await admin.get("/v1/surveys", params={"limit": 1})
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 1 and listed.json()["next_cursor"]
    following = await admin.get("/v1/surveys", params={"limit": 1, "cursor": listed.json()["next_cursor"]})
    assert following.json()["items"][0]["id"] != listed.json()["items"][0]["id"]
