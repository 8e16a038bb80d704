import asyncio
import csv
import io
import secrets
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from coupon.code_format import CodeFormat, as_strings, generate_bodies
from coupon.settings import CouponSettings
from tests.conftest import Platform
from tests.coupon.helpers import create_campaign, generate


async def _wait_for_job(client: httpx.AsyncClient, location: str) -> dict[str, Any]:
    for _ in range(600):
        job = (await client.get(location)).json()
        if job["status"] in ("succeeded", "failed"):
            return job  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError("the code generation job did not finish")


async def test_small_count_is_generated_in_the_request(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon, code={"prefix": "W1", "length": 12, "charset": "alphanumeric"})
    response = await coupon.post(f"/v1/coupon-campaigns/{campaign['id']}/codes", json={"count": 250})
    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"
    assert response.json()["generated"] == 250
    codes = await generate(coupon, campaign["id"], 50)
    assert len(codes) == len(set(codes)) == 300
    fmt = CodeFormat("W1", 12, "alphanumeric")
    assert all(fmt.accepts(code) for code in codes)
    stats = (await coupon.get(f"/v1/coupon-campaigns/{campaign['id']}")).json()["stats"]
    assert stats["generated"] == 300


async def test_count_limits(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon)
    for count in (0, 1_000_001, "5"):
        response = await coupon.post(f"/v1/coupon-campaigns/{campaign['id']}/codes", json={"count": count})
        assert response.status_code == 422


async def test_guessable_count_is_refused(coupon: httpx.AsyncClient) -> None:
    # 31^9 possible codes of 10 unambiguous characters / 2^34 = 1,538 codes at most in one campaign
    campaign = await create_campaign(coupon, code={"prefix": "GUESS", "length": 10, "charset": "unambiguous"})
    response = await coupon.post(f"/v1/coupon-campaigns/{campaign['id']}/codes", json={"count": 1_539})
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "codes_guessable"
    assert problem["max_codes"] == 31**9 >> 34 == 1_538
    assert problem["code_space"] == str(31**9)
    assert "2^34" in problem["detail"]
    stats = (await coupon.get(f"/v1/coupon-campaigns/{campaign['id']}")).json()["stats"]
    assert stats["generated"] == 0
    # numeric codes of 10 characters can never be safe
    short = await create_campaign(coupon, code={"length": 10, "charset": "numeric"})
    refused = await coupon.post(f"/v1/coupon-campaigns/{short['id']}/codes", json={"count": 1})
    assert refused.status_code == 422
    assert refused.json()["code"] == "codes_guessable"


async def test_the_rule_is_per_campaign_not_installation_wide(coupon: httpx.AsyncClient) -> None:
    """Campaigns of one format each have their own room: a full one never blocks another shop's."""
    fmt = {"prefix": "SHARE", "length": 10, "charset": "unambiguous"}
    first, second = await create_campaign(coupon, code=fmt), await create_campaign(coupon, code=fmt)
    full = await coupon.post(f"/v1/coupon-campaigns/{first['id']}/codes", json={"count": 1_538})
    assert full.status_code == 201, full.text
    more = await coupon.post(f"/v1/coupon-campaigns/{first['id']}/codes", json={"count": 1})
    assert more.status_code == 422 and more.json()["live_codes"] == 1_538
    other = await coupon.post(f"/v1/coupon-campaigns/{second['id']}/codes", json={"count": 1_538})
    assert other.status_code == 201, other.text
    issued = await coupon.post(f"/v1/coupon-campaigns/{second['id']}/issuances", json={"customer_id": "someone"})
    assert issued.status_code == 201, issued.text  # a code already made is handed out


def test_one_campaign_holds_a_million_codes_of_the_default_format() -> None:
    default = CodeFormat("", 12, "unambiguous")  # the contract's default length and this service's default charset
    settings = CouponSettings(DATABASE_URL="postgresql://x/y", LOYALTY_INTERNAL_TOKEN="t" * 16)  # type: ignore[call-arg]
    assert default.space >> settings.min_guess_bits >= 1_000_000


async def test_large_count_runs_as_a_job_and_exports_as_csv(coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon, code={"prefix": "BULK", "length": 14, "charset": "unambiguous"})
    response = await coupon.post(f"/v1/coupon-campaigns/{campaign['id']}/codes", json={"count": 100_000})
    assert response.status_code == 202
    assert response.json()["status"] in ("pending", "running", "succeeded")
    job = await _wait_for_job(coupon, response.headers["location"])
    assert job["status"] == "succeeded"
    assert job["generated"] == 100_000
    fetched = (await coupon.get(f"/v1/coupon-campaigns/{campaign['id']}")).json()
    assert fetched["stats"]["generated"] == 100_000
    assert fetched["generation"]["id"] == job["id"]

    async with coupon.stream("GET", f"/v1/coupon-campaigns/{campaign['id']}/codes", params={"format": "csv"}) as csv_:
        assert csv_.status_code == 200
        assert csv_.headers["content-type"].startswith("text/csv")
        text = "".join([chunk async for chunk in csv_.aiter_text()])
    rows = list(csv.DictReader(io.StringIO(text)))
    codes = [row["code"] for row in rows]
    assert len(codes) == len(set(codes)) == 100_000
    fmt = CodeFormat("BULK", 14, "unambiguous")
    assert all(fmt.accepts(code) for code in codes)


async def test_colliding_codes_are_drawn_again(coupon: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The source is made to repeat itself: every collision (within the batch and with another campaign's
    codes) is retried with fresh randomness, and the count still comes out exact."""
    real = secrets.token_bytes
    calls = {"n": 0}

    class RepeatingOnce:
        @staticmethod
        def token_bytes(n: int) -> bytes:
            calls["n"] += 1
            return b"\x00" * n if calls["n"] == 1 else real(n)

    fmt = {"prefix": "COLL", "length": 14, "charset": "unambiguous"}
    monkeypatch.setattr("coupon.code_format.secrets", RepeatingOnce)
    first = await create_campaign(coupon, code=fmt)
    codes = await generate(coupon, first["id"], 5)
    assert len(set(codes)) == 5
    assert "COLL" + "2" * 14 in codes  # the one repeated code that got in
    calls["n"] = 0
    second = await create_campaign(coupon, code=fmt)
    again = await generate(coupon, second["id"], 5)
    assert len(set(again)) == 5
    assert not set(again) & set(codes)


async def test_an_interrupted_job_is_resumed_where_it_stopped(platform: Platform, coupon: httpx.AsyncClient) -> None:
    """A job whose process died (its lease ran out) after batches 0 and 2 of 5 committed, out of order as two
    writers do: it is taken over, and only batches 1, 3 and 4 are written. A running job whose lease holds is left
    to its worker."""
    runner = platform.servers["coupon"].server.config.app.state.code_jobs  # type: ignore[attr-defined]
    campaign = await create_campaign(coupon, code={"prefix": "RSM", "length": 14, "charset": "unambiguous"})
    fmt = CodeFormat("RSM", 14, "unambiguous")
    job_id, leased_id = uuid.uuid4(), uuid.uuid4()
    connection = await asyncpg.connect(platform.env["DATABASE_URL"], server_settings={"search_path": "coupon"})
    saved = runner.batch_size
    runner.batch_size = 1000
    try:
        async with connection.transaction():
            await connection.execute(
                "UPDATE campaigns SET reserved = 5000, generated = 2000 WHERE id = $1", uuid.UUID(campaign["id"])
            )
            await connection.execute(
                "INSERT INTO code_jobs (id, campaign_id, requested, generated, seq_start, status, next_attempt_at) "
                "VALUES ($1, $2, 5000, 2000, 1, 'running', now() - interval '5 minutes'), "
                "       ($3, $2, 1000, 0, 5001, 'running', now() + interval '5 minutes')",
                job_id,
                uuid.UUID(campaign["id"]),
                leased_id,
            )
            for seq_start in (1, 2001):
                bodies = as_strings(generate_bodies(fmt, 1000))
                await connection.copy_records_to_table(
                    "codes",
                    records=[(c, uuid.UUID(campaign["id"]), seq_start + i) for i, c in enumerate(bodies)],
                    columns=["code", "campaign_id", "seq"],
                )
        await runner.wake()
        job = await _wait_for_job(coupon, f"/v1/coupon-campaigns/{campaign['id']}/code-jobs/{job_id}")
        assert (job["status"], job["generated"]) == ("succeeded", 5000)
        seqs = await connection.fetch(
            "SELECT seq, code FROM codes WHERE campaign_id = $1 ORDER BY seq", uuid.UUID(campaign["id"])
        )
        assert [r["seq"] for r in seqs] == list(range(1, 5001))
        assert all(fmt.accepts(r["code"]) for r in seqs)
        stats = (await coupon.get(f"/v1/coupon-campaigns/{campaign['id']}")).json()["stats"]
        assert stats["generated"] == 5000
        leased = (await coupon.get(f"/v1/coupon-campaigns/{campaign['id']}/code-jobs/{leased_id}")).json()
        assert (leased["status"], leased["generated"]) == ("running", 0)
    finally:
        runner.batch_size = saved
        # its worker "died" too: nobody may take it over later in the session
        await connection.execute("UPDATE code_jobs SET status = 'failed' WHERE id = $1", leased_id)
        await connection.close()


async def test_csv_export_through_the_gateway(admin: httpx.AsyncClient, coupon: httpx.AsyncClient) -> None:
    campaign = await create_campaign(coupon)
    codes = await generate(coupon, campaign["id"], 30)
    response = await admin.get(f"/v1/coupon-campaigns/{campaign['id']}/codes", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["code"] for row in rows] == codes
    missing = await admin.get(f"/v1/coupon-campaigns/{uuid.uuid4()}/codes", params={"format": "csv"})
    assert missing.status_code == 404
