"""`make demo` on a small slice of the Online Retail sample, against a platform of its own (the demo replaces the
earning rules and tiers and adds a surprise rule, which the rest of the session must not see)."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from scripts.demo import SURPRISE_CAMPAIGN, Options, run_demo
from scripts.online_retail import SAMPLE, invoices
from tests.conftest import ADMIN_KEY
from tests.support.platforms import own_platform

LIMIT = 30


async def transactions(client: httpx.AsyncClient, customer_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/customers/{customer_id}/points/transactions", params={"limit": 200})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_the_demo_replays_invoices_and_shows_three_customers_and_can_run_again(
    platform_env: dict[str, str], artifacts: Path
) -> None:
    expected = Counter(invoice.customer_id for invoice in itertools.islice(invoices(SAMPLE), LIMIT))
    async with own_platform(platform_env) as platform:
        served = {name for name in platform.servers if name != "gateway"}
        unserved = {"coupon", "points", "recommend", "survey"} - served
        # With a service left out (RECIPROCITY_TEST_SERVICES), its deliveries stay pending: wait less for them.
        wait = 10 if unserved else 60
        options = Options(url=platform.gateway_url, key=ADMIN_KEY, limit=LIMIT, concurrency=8, wait_seconds=wait)
        options.progress = False
        said: list[str] = []

        first = await run_demo(options, say=said.append)

        assert (first.accepted, first.refused) == (LIMIT, [])
        assert first.purchases == expected
        assert (first.pending_after, first.failed_after) == (LIMIT * len(unserved), 0)
        if served == {"coupon", "points", "recommend", "survey"}:
            assert set(first.setup.values()) == {"set", "created"}, first.setup
            assert first.model is not None and first.model["interactions"] > 0
        # A regular, a third-time buyer, a first-time buyer; their overviews printed.
        regular, third, newcomer = first.shown
        assert (expected[regular], expected[third], expected[newcomer]) == (max(expected.values()), 3, 1)
        assert first.returning == newcomer
        assert "woke no one" in "\n".join(said)
        output = "\n".join(said)
        (artifacts / "demo.txt").write_text(output)
        for customer in first.shown:
            assert f"Customer {customer}: {expected[customer]} purchase" in output
        if "points" in served:
            # it ends with the experiment's report, which says plainly that there is no lift
            assert first.experiment is not None
            exposed = sum(a["customers_exposed"] for a in first.experiment["arms"].values())
            assert exposed > 0 and not (first.experiment["lift"]["repeat_rate"] or {}).get("significant")
            assert output.rstrip().splitlines()[-1].startswith("Run it again")
            assert "There is no significant lift" in output

        async with platform.client() as client:
            for customer in first.shown:
                overview = first.overviews[customer]
                assert sorted(overview["unavailable"]) == sorted(unserved)
                if "points" in served:
                    # One earn per purchase, and the overview's balance is the ledger's.
                    ledger = await transactions(client, customer)
                    today = 1 if customer == first.returning else 0
                    assert [t["type"] for t in ledger].count("earn") == expected[customer] + today
                    assert overview["points"]["balance"] == sum(t["points"] for t in ledger) > 0
                if "coupon" in served:
                    # The surprise rule (a coupon on the 2nd purchase) woke no one in the month's history: only the
                    # customer who came back today has one.
                    surprises = [c for c in overview["coupons"] if c["campaign_name"] == SURPRISE_CAMPAIGN]
                    assert len(surprises) == (1 if customer == first.returning else 0), overview["coupons"]
                if "recommend" in served:
                    assert overview["recommendations"], customer

            before = {c: (await transactions(client, c)) if "points" in served else [] for c in first.shown}
            again = await run_demo(options, say=said.append)

            assert (again.accepted, again.duplicates, again.refused) == (0, LIMIT, [])
            assert set(again.setup.values()) <= {"set", "already set up", "not available on this platform"}
            for customer in first.shown:
                assert again.overviews[customer]["coupons"] == first.overviews[customer]["coupons"]
                if "points" in served:
                    assert await transactions(client, customer) == before[customer]
            campaigns = (await client.get("/v1/coupon-campaigns", params={"limit": 200})).json()["items"]
            surprise = [c for c in campaigns if c["name"] == SURPRISE_CAMPAIGN]
            assert len(surprise) == 1
            if "coupon" in served:
                # History surprised no one; today's 2nd purchase did, once, whatever the reruns.
                assert surprise[0]["stats"]["issued"] == 1
