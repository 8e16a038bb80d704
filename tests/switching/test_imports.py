"""Switching to Reciprocity (contract v1.1): opening balances and opt-outs imported through the gateway, each
line judged alone, each file idempotent, admin only."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Platform
from tests.survey.conftest import address, create_survey, invite

NDJSON = {"Content-Type": "application/x-ndjson"}
CSV = {"Content-Type": "text/csv"}


def uid(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def ndjson(lines: list[Any]) -> bytes:
    return b"\n".join(line if isinstance(line, bytes) else orjson.dumps(line) for line in lines) + b"\n"


async def points_of(admin: httpx.AsyncClient, customer: str) -> dict[str, Any]:
    response = await admin.get(f"/v1/customers/{customer}/points")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


class TestOpeningBalances:
    async def test_lines_are_judged_alone_and_a_file_sent_twice_changes_nothing(self, admin: httpx.AsyncClient) -> None:
        alice, bob, carol = uid(), uid(), uid()
        expires = (datetime.now(UTC) + timedelta(days=90)).replace(microsecond=0)
        body = ndjson(
            [
                {"customer_id": alice, "points": 1200, "reference": "old-1", "expires_at": expires.isoformat()},
                {"customer_id": bob, "points": -5, "reference": "old-2"},
                b"{not json",
                {"customer_id": carol, "points": 300, "reference": "old-3", "qualifying_points": 6000},
                {"customer_id": "no spaces allowed", "points": 1, "reference": "old-4"},
                {"customer_id": bob, "points": 10, "reference": "old-5", "colour": "blue"},
            ]
        )
        first = await admin.post("/v1/points/balances:import", content=body, headers=NDJSON)
        assert first.status_code == 200, first.text
        report = first.json()
        assert (report["accepted"], report["duplicates"]) == (2, 0)
        assert [r["line"] for r in report["rejected"]] == [2, 3, 5, 6]
        assert report["rejected"][0]["errors"][0]["field"] == "points"
        assert report["rejected"][3]["errors"][0]["field"] == "colour"

        again = (await admin.post("/v1/points/balances:import", content=body, headers=NDJSON)).json()
        assert (again["accepted"], again["duplicates"]) == (0, 2)

        alice_points = await points_of(admin, alice)
        assert alice_points["balance"] == 1200
        assert [(e["points"], datetime.fromisoformat(e["expires_at"])) for e in alice_points["expiring"]] == [
            (1200, expires)
        ]
        assert alice_points["qualifying_points"] == 0
        carol_points = await points_of(admin, carol)
        assert (carol_points["balance"], carol_points["qualifying_points"], carol_points["tier"]) == (300, 6000, "gold")
        assert (await points_of(admin, bob))["balance"] == 0
        ledger = (await admin.get(f"/v1/customers/{alice}/points/transactions")).json()["items"]
        assert [(t["type"], t["points"], t["reference"]) for t in ledger] == [("adjust", 1200, "old-1")]

    async def test_a_member_twice_in_one_file(self, admin: httpx.AsyncClient) -> None:
        erin = uid()
        lines = [
            {"customer_id": erin, "points": 10, "reference": "a"},
            {"customer_id": erin, "points": 20, "reference": "b"},
            {"customer_id": erin, "points": 99, "reference": "a"},
        ]
        report = (await admin.post("/v1/points/balances:import", content=ndjson(lines), headers=NDJSON)).json()
        assert (report["accepted"], report["duplicates"], report["rejected"]) == (2, 1, [])
        ledger = (await admin.get(f"/v1/customers/{erin}/points/transactions")).json()["items"]
        assert [(t["points"], t["balance_after"]) for t in reversed(ledger)] == [(10, 10), (20, 30)]

    async def test_a_line_that_would_leave_the_balance_range_is_refused_alone(self, admin: httpx.AsyncClient) -> None:
        frank, gina = uid(), uid()
        half = 2**52
        lines = [
            {"customer_id": frank, "points": half, "reference": "a"},
            {"customer_id": gina, "points": 7, "reference": "a"},
            {"customer_id": frank, "points": half, "reference": "b"},  # 2^53 is past the range
            {"customer_id": frank, "points": 5, "reference": "c"},
        ]
        report = (await admin.post("/v1/points/balances:import", content=ndjson(lines), headers=NDJSON)).json()
        assert (report["accepted"], report["duplicates"]) == (3, 0)
        assert [(r["line"], r["errors"][0]["field"]) for r in report["rejected"]] == [(3, "points")]
        assert (await points_of(admin, frank))["balance"] == half + 5
        assert (await points_of(admin, gina))["balance"] == 7
        again = (await admin.post("/v1/points/balances:import", content=ndjson(lines), headers=NDJSON)).json()
        assert (again["accepted"], again["duplicates"], len(again["rejected"])) == (0, 3, 1)
        assert (await points_of(admin, frank))["balance"] == half + 5
        audit = (await admin.get("/v1/points/audit")).json()
        assert not [m for m in audit.get("mismatches", []) if m.get("customer_id") in (frank, gina)]

    async def test_an_opening_balance_first_repays_what_the_member_owes(self, admin: httpx.AsyncClient) -> None:
        hal = uid()
        owed = await admin.post(f"/v1/customers/{hal}/points/adjustments", json={"points": -100, "reference": "owed"})
        assert owed.status_code == 201, owed.text
        expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
        line = {"customer_id": hal, "points": 150, "reference": "open", "expires_at": expires.isoformat()}
        report = (await admin.post("/v1/points/balances:import", content=ndjson([line]), headers=NDJSON)).json()
        assert report["accepted"] == 1
        standing = await points_of(admin, hal)
        assert standing["balance"] == 50
        # only the 50 points left after repaying the debt can be spent, and expire
        assert [(e["points"], datetime.fromisoformat(e["expires_at"])) for e in standing["expiring"]] == [(50, expires)]

    @pytest.mark.real_commits
    async def test_the_same_file_sent_twice_at_once_counts_once(self, admin: httpx.AsyncClient) -> None:
        members = [uid() for _ in range(200)]
        lines = [{"customer_id": m, "points": 5 + i, "reference": "open"} for i, m in enumerate(members)]
        body = ndjson(lines)
        first, second = await asyncio.gather(
            *(admin.post("/v1/points/balances:import", content=body, headers=NDJSON) for _ in range(2))
        )
        reports = sorted(
            [
                (first.json()["accepted"], first.json()["duplicates"]),
                (second.json()["accepted"], second.json()["duplicates"]),
            ]
        )
        assert reports == [(0, 200), (200, 0)]
        for i in (0, 99, 199):
            standing = await points_of(admin, members[i])
            assert standing["balance"] == 5 + i

    async def test_each_line_is_its_own_json(self, admin: httpx.AsyncClient) -> None:
        # a string left open on one line must not swallow the next, even when the counts would add up
        ivy, jon, kim = uid(), uid(), uid()
        body = b"\n".join(
            [
                b'{"customer_id": "%s", "points": 1, "reference": "r", "description": "x}' % ivy.encode(),
                b'{", "qualifying_points": 1}',
                b'{"customer_id": "%s", "points": 1, "reference": "r"},' % jon.encode()
                + b'{"customer_id": "%s", "points": 1, "reference": "r"}' % kim.encode(),
            ]
        )
        report = (await admin.post("/v1/points/balances:import", content=body, headers=NDJSON)).json()
        assert (report["accepted"], [r["line"] for r in report["rejected"]]) == (0, [1, 2, 3])
        assert (await points_of(admin, ivy))["balance"] == 0

    async def test_csv_with_a_header(self, admin: httpx.AsyncClient) -> None:
        dave = uid()
        body = f"customer_id,points,reference,expires_at\n{dave},45,csv-1,\n{dave},x,csv-2,\n".encode()
        report = (await admin.post("/v1/points/balances:import", content=body, headers=CSV)).json()
        assert report["accepted"] == 1
        assert [(r["line"], r["errors"][0]["field"]) for r in report["rejected"]] == [(3, "points")]
        assert (await points_of(admin, dave))["balance"] == 45


class TestOptOuts:
    async def test_opted_out_customers_and_addresses_are_never_invited(self, admin: httpx.AsyncClient) -> None:
        survey = await create_survey(admin)
        by_id, by_email, email = uid(), uid(), address()
        waiting = uid()
        queued = await invite(admin, survey["id"], waiting, address())
        assert queued.status_code == 201, queued.text
        body = ndjson(
            [
                {"customer_id": by_id},
                {"email": email.upper()},
                {"customer_id": waiting},
                {},
                {"email": "not an address"},
            ]
        )
        report = (await admin.post("/v1/survey-opt-outs:import", content=body, headers=NDJSON)).json()
        assert (report["accepted"], report["duplicates"]) == (3, 0)
        assert [r["line"] for r in report["rejected"]] == [4, 5]
        again = (await admin.post("/v1/survey-opt-outs:import", content=body, headers=NDJSON)).json()
        assert (again["accepted"], again["duplicates"]) == (0, 3)

        refused = await invite(admin, survey["id"], by_id, address())
        assert refused.status_code == 409
        assert refused.json()["code"] == "customer_opted_out"
        assert (await invite(admin, survey["id"], by_email, email)).status_code == 409
        invitation = queued.json()["invitation_id"]
        status = await admin.get(f"/v1/surveys/{survey['id']}/invitations/{invitation}")
        assert status.json()["status"] == "cancelled"

    async def test_a_file_naming_someone_twice(self, admin: httpx.AsyncClient) -> None:
        survey = await create_survey(admin)
        ann, other, email = uid(), uid(), address()
        # the second line adds nothing (ann is suppressed by the first), so its address is not suppressed by it:
        # the third line is what suppresses the address
        body = ndjson([{"customer_id": ann}, {"customer_id": ann, "email": email}, {"email": email.upper()}])
        report = (await admin.post("/v1/survey-opt-outs:import", content=body, headers=NDJSON)).json()
        assert (report["accepted"], report["duplicates"], report["rejected"]) == (2, 1, [])
        refused = await invite(admin, survey["id"], other, email)
        assert refused.status_code == 409
        assert refused.json()["code"] == "customer_opted_out"


class TestLimits:
    @pytest.mark.parametrize("path", ["/v1/points/balances:import", "/v1/survey-opt-outs:import"])
    async def test_wrong_type_too_many_lines_and_partners_are_refused(
        self, platform: Platform, admin: httpx.AsyncClient, path: str
    ) -> None:
        line = {"customer_id": uid(), "points": 1, "reference": "x"} if "points" in path else {"customer_id": uid()}
        wrong = await admin.post(path, content=ndjson([line]), headers={"Content-Type": "application/json"})
        assert wrong.status_code == 415
        assert wrong.headers["content-type"].startswith("application/problem+json")
        crowd = [uid() for _ in range(10_001)]
        many = ndjson([{"customer_id": c, "points": 1, "reference": "r"} for c in crowd])
        too_many = await admin.post(path, content=many, headers=NDJSON)
        assert too_many.status_code == 413, too_many.text
        assert (await points_of(admin, crowd[0]))["balance"] == 0  # nothing of the refused call was applied
        key = await admin.post("/v1/api-keys", json={"name": uid("k"), "scopes": ["points:write", "surveys:write"]})
        async with platform.client(key.json()["key"]) as partner:
            assert (await partner.post(path, content=ndjson([line]), headers=NDJSON)).status_code == 403
        async with platform.client(None) as anonymous:
            assert (await anonymous.post(path, content=ndjson([line]), headers=NDJSON)).status_code == 401
