"""NPS, CSAT, response rate and trend on known answer sets; the reward and detractor events they raise."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from tests.conftest import Platform
from tests.support.mail import Mailbox
from tests.survey.conftest import address, create_survey, invite, links, uid


async def _answer_all(
    admin: httpx.AsyncClient,
    mailbox: Mailbox,
    survey_id: str,
    answer_sets: list[list[dict]],  # type: ignore[type-arg]
) -> list[str]:
    """One invitation per answer set, answered over JSON; returns the response ids."""
    emails = [address() for _ in answer_sets]
    for email in emails:
        assert (await invite(admin, survey_id, uid(), email)).status_code == 201
    response_ids = []
    for email, answers in zip(emails, answer_sets, strict=True):
        _, token = links((await mailbox.wait_for(email))[0])
        created = await admin.post("/v1/survey-responses", json={"token": token, "answers": answers})
        assert created.status_code == 201, created.text
        response_ids.append(created.json()["response_id"])
    return response_ids


def nps(score: int) -> dict:  # type: ignore[type-arg]
    return {"question_id": "nps", "value": score}


def rating(score: int) -> dict:  # type: ignore[type-arg]
    return {"question_id": "csat", "value": score}


async def test_nps_and_csat_on_a_known_answer_set(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox, db: asyncpg.Connection
) -> None:
    questions = [
        {"id": "nps", "type": "nps", "text": "Recommend us?", "required": False},
        {"id": "csat", "type": "rating", "text": "Satisfied?", "required": False},
    ]
    survey = await create_survey(admin, questions=questions)
    # NPS answers: promoters 10, 9, 9; passives 8, 7; detractors 6, 0 -> 7 answered, (3 - 2) / 7 = 14.3.
    # Ratings: 5, 4, 3, 1 -> 2 of 4 satisfied = 0.5. One response answers nothing scored.
    answer_sets = [
        [nps(10), rating(5)],
        [nps(9), rating(4)],
        [nps(9)],
        [nps(8), rating(3)],
        [nps(7)],
        [nps(6), rating(1)],
        [nps(0)],
        [],
    ]
    await _answer_all(admin, mailbox, survey["id"], answer_sets)
    # Two more invitations that nobody answers.
    for _ in range(2):
        assert (await invite(admin, survey["id"])).status_code == 201

    results = (await admin.get(f"/v1/surveys/{survey['id']}/results", params={"interval": "day"})).json()
    assert results["invited"] == 10
    assert results["responded"] == 8
    assert results["response_rate"] == 0.8
    assert results["nps"] == {"score": 14.3, "promoters": 3, "passives": 2, "detractors": 2}
    assert results["csat"] == 0.5
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert results["trend"] == [{"period_start": today.isoformat().replace("+00:00", "Z"), "responses": 8, "nps": 14.3}]

    # A window before anything happened counts nothing, and its trend lists each empty week.
    start = today - timedelta(days=30)
    empty = await admin.get(
        f"/v1/surveys/{survey['id']}/results",
        params={"from": start.isoformat(), "to": (today - timedelta(days=2)).isoformat(), "interval": "week"},
    )
    body = empty.json()
    assert (body["invited"], body["responded"], body["response_rate"], body["csat"]) == (0, 0, None, None)
    assert body["nps"]["score"] is None
    assert len(body["trend"]) in (4, 5) and all(p["responses"] == 0 for p in body["trend"])
    assert all(datetime.fromisoformat(p["period_start"]).weekday() == 0 for p in body["trend"])

    backwards = await admin.get(
        f"/v1/surveys/{survey['id']}/results", params={"from": today.isoformat(), "to": start.isoformat()}
    )
    assert backwards.status_code == 422


async def test_trend_by_month_with_backdated_answers(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox, db: asyncpg.Connection
) -> None:
    survey = await create_survey(admin)
    ids = await _answer_all(admin, mailbox, survey["id"], [[nps(10)], [nps(2)], [nps(9)]])
    # Move the first two answers to January and the third to March, as if answered then.
    for response_id, when in zip(ids, ["2026-01-10", "2026-01-31", "2026-03-02"], strict=True):
        moment = datetime.fromisoformat(when + "T12:00:00+00:00")
        await db.execute("UPDATE responses SET submitted_at = $2 WHERE id = $1", uuid.UUID(response_id), moment)
        await db.execute(
            "UPDATE response_scores SET submitted_at = $2 WHERE response_id = $1", uuid.UUID(response_id), moment
        )
    results = await admin.get(
        f"/v1/surveys/{survey['id']}/results",
        params={"from": "2026-01-01T00:00:00Z", "to": "2026-04-01T00:00:00Z", "interval": "month"},
    )
    assert results.json()["trend"] == [
        {"period_start": "2026-01-01T00:00:00Z", "responses": 2, "nps": 0.0},
        {"period_start": "2026-02-01T00:00:00Z", "responses": 0, "nps": None},
        {"period_start": "2026-03-01T00:00:00Z", "responses": 1, "nps": 100.0},
    ]
    assert results.json()["nps"]["score"] == round(100 * (2 - 1) / 3, 1)


async def test_response_publishes_reward_and_detractor_events(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox, db: asyncpg.Connection
) -> None:
    survey = await create_survey(admin, reward_points=25)
    unrewarded = await create_survey(admin, reward_points=None)
    [promoter, detractor] = await _answer_all(admin, mailbox, survey["id"], [[nps(10)], [nps(4)]])
    [no_reward] = await _answer_all(admin, mailbox, unrewarded["id"], [[nps(9)]])

    async def events(response_id: str) -> dict[str, tuple[dict, list[str]]]:  # type: ignore[type-arg]
        rows = await db.fetch(
            "SELECT e.type, e.payload, array_agg(d.consumer ORDER BY d.consumer) AS consumers"
            " FROM outbox_events e JOIN outbox_deliveries d ON d.event_id = e.id"
            " WHERE e.payload->>'response_id' = $1 GROUP BY e.type, e.payload",
            response_id,
        )
        import json

        return {row["type"]: (json.loads(row["payload"]), list(row["consumers"])) for row in rows}

    promoted = await events(promoter)
    assert set(promoted) == {"survey.responded"}
    payload, consumers = promoted["survey.responded"]
    assert consumers == ["points"]
    assert payload["reward_points"] == 25
    assert payload["survey_id"] == survey["id"]
    assert set(payload) == {"response_id", "invitation_id", "survey_id", "customer_id", "reward_points"}

    detracted = await events(detractor)
    assert set(detracted) == {"survey.responded", "survey.detractor"}
    payload, consumers = detracted["survey.detractor"]
    assert consumers == ["coupon", "recommend"]
    assert payload["score"] == 4
    assert set(payload) == {"response_id", "invitation_id", "survey_id", "customer_id", "score", "purchase_id"}
    assert payload["purchase_id"] is None  # invited by the API, not after a purchase

    assert await events(no_reward) == {}
