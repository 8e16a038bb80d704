"""An invitation by real email, its link followed through the gateway, answers checked and counted once."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import httpx
import pytest

from tests.conftest import Platform
from tests.support.mail import Mailbox
from tests.survey.conftest import address, create_survey, invite, links, uid


async def test_email_link_form_and_single_use(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox, db: asyncpg.Connection
) -> None:
    survey = await create_survey(admin)
    customer, email = uid(), address()
    created = await invite(admin, survey["id"], customer, email)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "queued"

    [message] = await mailbox.wait_for(email)
    link, token = links(message)
    assert link.startswith(platform.env["PUBLIC_BASE_URL"] + "/s/")
    assert len(token) >= 22  # at least 128 bits in URL-safe base64
    assert message["List-Unsubscribe"] == f"<{link}/unsubscribe>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = message.get_body(("html",))
    assert html is not None and link in html.get_content()

    # Only the token's hash is stored; the rendered message is dropped once the server accepted it.
    await _wait_status(admin, survey["id"], created.json()["invitation_id"], "sent")
    row = await db.fetchrow(
        "SELECT i.status, i.token_hash, m.message FROM invitations i JOIN mail_outbox m ON m.invitation_id = i.id"
        " WHERE i.id = $1",
        uuid.UUID(created.json()["invitation_id"]),
    )
    assert row["token_hash"] == hashlib.sha256(token.encode()).digest()
    assert row["message"] is None

    # The public link works through the gateway without any credentials.
    async with platform.client(None) as public:
        page = await public.get(f"/s/{token}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["referrer-policy"] == "no-referrer"
        assert 'name="viewport"' in page.text
        assert page.text.count('type="radio" name="q_nps"') == 11
        assert page.text.count('type="radio" name="q_csat"') == 5

        missing = await public.post(f"/s/{token}", data={"q_csat": "4"})
        assert missing.status_code == 422
        assert "This question is required." in missing.text
        assert 'value="4" checked' in missing.text  # what was chosen stays chosen

        thanks = await public.post(
            f"/s/{token}", data={"q_nps": "9", "q_csat": "5", "q_why": "Fast delivery", "q_channel": "Search"}
        )
        assert thanks.status_code == 200, thanks.text
        assert "Thank you" in thanks.text

        again = await public.post(f"/s/{token}", data={"q_nps": "2"})
        assert again.status_code == 409
        assert "Already answered" in again.text
        assert (await public.get(f"/s/{token}")).status_code == 409
        assert (await public.get("/s/not-a-real-token-at-all")).status_code == 404
        # A mangled link is refused by the gateway's route table before the service: a person still reads a page.
        for mangled in (f"/s/{token}/extra/parts", f"/s/{token * 8}", f"/s/{token}/unsubscribe/more"):
            malformed = await public.get(mangled)
            assert malformed.status_code == 404
            assert malformed.headers["content-type"].startswith("text/html")
            assert "This link doesn't work" in malformed.text
            assert malformed.headers["referrer-policy"] == "no-referrer"

    status = await admin.get(f"/v1/surveys/{survey['id']}/invitations/{created.json()['invitation_id']}")
    assert status.json()["responded_at"] is not None
    results = (await admin.get(f"/v1/surveys/{survey['id']}/results")).json()
    assert results["responded"] == 1
    assert results["nps"]["promoters"] == 1


async def _wait_status(client: httpx.AsyncClient, survey_id: str, invitation_id: str, status: str) -> dict:  # type: ignore[type-arg]
    for _ in range(200):
        body = (await client.get(f"/v1/surveys/{survey_id}/invitations/{invitation_id}")).json()
        if body["status"] == status:
            return body  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"invitation stayed {body['status']}")


async def test_json_answers_are_validated_by_type(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    survey = await create_survey(admin)
    email = address()
    assert (await invite(admin, survey["id"], uid(), email)).status_code == 201
    _, token = links((await mailbox.wait_for(email))[0])

    form = await admin.get(f"/v1/survey-invitations/{token}")
    assert form.status_code == 200
    assert [q["id"] for q in form.json()["questions"]] == ["nps", "csat", "why", "channel"]

    bad_answers = [
        ([{"question_id": "nps", "value": 11}], "answers.nps"),
        ([{"question_id": "nps", "value": "9"}], "answers.nps"),
        ([{"question_id": "nps", "value": True}], "answers.0.value.int"),
        ([{"question_id": "csat", "value": 0}], "answers.nps"),  # required NPS missing
        ([{"question_id": "nps", "value": 5}, {"question_id": "csat", "value": 6}], "answers.csat"),
        ([{"question_id": "nps", "value": 5}, {"question_id": "channel", "value": "TV"}], "answers.channel"),
        ([{"question_id": "nps", "value": 5}, {"question_id": "nope", "value": 1}], "answers.1.question_id"),
        ([{"question_id": "nps", "value": 5}, {"question_id": "nps", "value": 6}], "answers.1.question_id"),
        ([{"question_id": "nps", "value": 5}, {"question_id": "why", "value": 3}], "answers.why"),
    ]
    for answers, field in bad_answers:
        response = await admin.post("/v1/survey-responses", json={"token": token, "answers": answers})
        assert response.status_code == 422, (answers, response.text)
        assert field in [e["field"] for e in response.json()["errors"]], (answers, response.json())

    # A rejected answer used nothing up.
    good = {"token": token, "answers": [{"question_id": "nps", "value": 3}, {"question_id": "csat", "value": 2}]}
    created = await admin.post("/v1/survey-responses", json=good)
    assert created.status_code == 201, created.text
    assert created.json()["reward_points"] == 50

    reused = await admin.post("/v1/survey-responses", json=good)
    assert reused.status_code == 409
    assert reused.json()["code"] == "invitation_used"
    assert (await admin.get(f"/v1/survey-invitations/{token}")).json()["code"] == "invitation_used"
    unknown = await admin.post("/v1/survey-responses", json={"token": "x" * 43, "answers": []})
    assert unknown.status_code == 404


@pytest.mark.real_commits
async def test_concurrent_submissions_of_one_link_record_one_response(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox, db: asyncpg.Connection
) -> None:
    survey = await create_survey(admin)
    email = address()
    assert (await invite(admin, survey["id"], uid(), email)).status_code == 201
    _, token = links((await mailbox.wait_for(email))[0])
    body = {"token": token, "answers": [{"question_id": "nps", "value": 10}]}
    async with platform.client(limits=httpx.Limits(max_connections=50)) as client:
        answers = await asyncio.gather(*(client.post("/v1/survey-responses", json=body) for _ in range(20)))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 19
    count = await db.fetchval("SELECT count(*) FROM responses WHERE survey_id = $1", uuid.UUID(survey["id"]))
    assert count == 1


async def test_expired_link_is_gone(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox, db: asyncpg.Connection
) -> None:
    survey = await create_survey(admin)
    email = address()
    created = await invite(admin, survey["id"], uid(), email)
    _, token = links((await mailbox.wait_for(email))[0])
    await db.execute(
        "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(created.json()["invitation_id"]),
    )
    async with platform.client(None) as public:
        page = await public.get(f"/s/{token}")
        assert page.status_code == 410
        assert "expired" in page.text
    answer = await admin.post(
        "/v1/survey-responses", json={"token": token, "answers": [{"question_id": "nps", "value": 8}]}
    )
    assert answer.status_code == 410
    assert answer.json()["code"] == "invitation_expired"


async def test_customer_token_answers_only_its_own_invitation(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    survey = await create_survey(admin)
    owner, email = uid(), address()
    assert (await invite(admin, survey["id"], owner, email)).status_code == 201
    _, token = links((await mailbox.wait_for(email))[0])

    async def customer_token(customer_id: str) -> str:
        minted = await admin.post("/v1/customer-tokens", json={"customer_id": customer_id, "ttl_seconds": 600})
        assert minted.status_code == 201, minted.text
        return str(minted.json()["token"])

    # The customer overview lists what the customer can still answer (the token itself is not there).
    async with platform.service_client("survey") as service:
        pending = (await service.get(f"/v1/customers/{owner}/surveys", params={"status": "pending"})).json()
    assert [item["survey_id"] for item in pending["items"]] == [survey["id"]]
    overview = (await admin.get(f"/v1/customers/{owner}/overview")).json()
    assert [item["survey_id"] for item in overview["surveys"]["pending"]] == [survey["id"]]

    body = {"token": token, "answers": [{"question_id": "nps", "value": 7}]}
    async with platform.client(await customer_token(uid())) as stranger:
        assert (await stranger.get(f"/v1/survey-invitations/{token}")).status_code == 404
        assert (await stranger.post("/v1/survey-responses", json=body)).status_code == 404
    async with platform.client(await customer_token(owner)) as customer:
        assert (await customer.get(f"/v1/survey-invitations/{token}")).status_code == 200
        assert (await customer.post("/v1/survey-responses", json=body)).status_code == 201
        assert (await customer.post(f"/v1/surveys/{survey['id']}/invitations", json={})).status_code == 403
    async with platform.service_client("survey") as service:
        assert (await service.get(f"/v1/customers/{owner}/surveys")).json()["items"] == []
