"""The console as a person uses it, in Debian's headless Chromium: sign in, the home page's charts drawn from
the demo data, a campaign and a surprise rule created through the forms, a failed delivery re-driven, a reward
fulfilled; every
page and /docs load nothing from another host; screenshots at phone and desk width in test-artifacts/console/."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncpg
import httpx
import pytest

from gateway.console import metrics
from scripts.demo import set_up
from scripts.replay import purchases
from tests.conftest import ADMIN_KEY, Platform
from tests.support.browser import CHROMIUM, Browser, chromium

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]

PHONE, DESK = 390, 1280
# an absolute or protocol-relative URL in an attribute that loads or links something
_ELSEWHERE = re.compile(r"""(?:src|href|action|srcset)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.I)


async def demo_data(admin: httpx.AsyncClient, count: int = 150) -> list[str]:
    """The demo's levers and purchases spread over the Online Retail sample's month, delivered everywhere."""
    await set_up(admin)
    every = list(purchases())
    bodies = every[:: max(1, len(every) // count)][:count]
    for start in range(0, len(bodies), 10):
        answers = await asyncio.gather(*(admin.post("/v1/purchases", json=b) for b in bodies[start : start + 10]))
        assert all(a.status_code == 202 for a in answers), [a.text for a in answers if a.status_code != 202]
    last = bodies[-1]["purchase_id"]
    for _ in range(300):
        deliveries = (await admin.get(f"/v1/purchases/{last}")).json()["deliveries"]
        if all(state == "delivered" for state in deliveries.values()):
            break
        await asyncio.sleep(0.2)
    # the demo's programme keeps points; under rules whose points expire, some earned today give the liability
    # chart its months
    rules = (await admin.get("/v1/points/rules")).json()
    assert (await admin.put("/v1/points/rules", json={**rules, "expires_after_days": 365})).status_code == 200
    for number, customer in enumerate(sorted({b["customer_id"] for b in bodies})[:20]):
        earned = await admin.post(
            f"/v1/customers/{customer}/points/earn",
            json={"points": 100 + 10 * number, "reference": f"console-demo-{customer}"},
        )
        assert earned.status_code == 201, earned.text
    return [b["customer_id"] for b in bodies]


def assert_local(html: str, browser: Browser, origin: str) -> None:
    assert not _ELSEWHERE.search(re.sub(r'xmlns(:\w+)?="[^"]*"', "", html)), _ELSEWHERE.search(html)
    elsewhere = [u for u in browser.requested if not u.startswith((origin + "/", "data:", "about:"))]
    assert not elsewhere, elsewhere


async def shots(browser: Browser, artifacts: Path, name: str) -> None:
    await browser.screenshot(artifacts / "console" / f"{name}-phone.png", PHONE, mobile=True)
    await browser.screenshot(artifacts / "console" / f"{name}-desk.png", DESK, mobile=False)


# its surprise rule fires on every purchase, and it re-drives a delivery: on a platform of its own
@pytest.mark.own_platform
async def test_the_console_in_a_browser(platform: Platform, admin: httpx.AsyncClient, artifacts: Path) -> None:
    customers = await demo_data(admin)
    metrics.forget()  # the gateway runs in this process: the home page's purchase figures, as of now
    origin = platform.gateway_url
    async with chromium() as browser:
        await browser.goto(origin + "/console/")
        assert (await browser.url()).startswith(origin + "/console/login")
        await shots(browser, artifacts, "login")
        await browser.submit("form[action='/console/login']", {"key": ADMIN_KEY})
        assert await browser.url() == origin + "/console/"
        cookie = next(c for c in await browser.cookies() if c["name"] == "rcp_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"

        # the home page: styled by the console's own stylesheet, each chart drawn with its table and a sentence
        assert await browser.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(245, 247, 250)"
        home = await browser.html()
        for chart in ("weekly", "cohorts", "liability", "coupons"):
            figure = re.search(rf'<figure[^>]*id="chart-{chart}".*?</figure>', home, re.S)
            assert figure, chart
            assert "<svg" in figure.group(0) and "<table" in figure.group(0) and "<desc" in figure.group(0), chart
        weekly = re.search(r'id="chart-weekly".*?</figure>', home, re.S).group(0)  # type: ignore[union-attr]
        assert weekly.count("<rect") >= 2 + 2 * 3 and "No data yet" not in weekly  # a legend, 3 weeks or more
        assert_local(home, browser, origin)
        await shots(browser, artifacts, "home")

        # a campaign and a surprise rule, through the forms
        await browser.goto(origin + "/console/campaigns")
        await browser.submit(
            "form[action='/console/campaigns']",
            {"name": "Console spring sale", "value": "15", "prefix": "SPRING", "valid_until": "2027-06-30"},
        )
        campaign_url = await browser.url()
        assert re.fullmatch(re.escape(origin) + r"/console/campaigns/[0-9a-f-]{36}\?done=created", campaign_url)
        campaign_id = campaign_url.split("/")[-1].split("?")[0]
        page = await browser.html()
        assert "Console spring sale" in page and "2027-06-30" in page
        await shots(browser, artifacts, "campaign")
        await browser.goto(origin + "/console/rules")
        await browser.submit(
            "form[action='/console/rules'].grid", {"campaign_id": campaign_id, "trigger": "nth_purchase", "n": "7"}
        )
        rules = await browser.html()
        assert "purchase number 7" in rules and "Console spring sale" in rules
        listed = (await admin.get("/v1/coupon-rules")).json()["items"]
        assert [r["trigger"] for r in listed if r["campaign_id"] == campaign_id] == [{"type": "nth_purchase", "n": 7}]
        await shots(browser, artifacts, "rules")
        await browser.goto(origin + "/console/campaigns")
        await shots(browser, artifacts, "campaigns")

        # a failed delivery, re-driven from the deliveries page
        connection = await asyncpg.connect(platform.env["DATABASE_URL"], server_settings={"search_path": "gateway"})
        try:
            parked = await connection.fetchval(
                "UPDATE outbox_deliveries SET status = 'failed', last_error = 'points: 503 (test)' "
                "WHERE id = (SELECT min(id) FROM outbox_deliveries WHERE status = 'delivered') RETURNING id"
            )
            await browser.goto(origin + "/console/deliveries")
            assert f'<th scope="row">{parked}</th>' in await browser.html()
            await shots(browser, artifacts, "deliveries")
            await browser.submit(f"form:has(input[name='delivery_id'][value='{parked}'])", {})
            assert "queued again" in await browser.html()
            assert await connection.fetchval("SELECT status FROM outbox_deliveries WHERE id = $1", parked) != "failed"
        finally:
            await connection.close()

        # a reward redeemed by a customer, handed over from the customer's page
        rich = sorted(set(customers))[0]  # earned points today in demo_data
        reward = await admin.post(
            "/v1/rewards", json={"name": "Console tote bag", "kind": "item", "cost_points": 50, "stock": 5}
        )
        assert reward.status_code == 201, reward.text
        redeemed = await admin.post(
            f"/v1/customers/{rich}/reward-redemptions",
            json={"reward_id": reward.json()["id"], "reference": "console-tote-1"},
        )
        assert redeemed.status_code == 201 and redeemed.json()["status"] == "pending", redeemed.text
        await browser.goto(origin + f"/console/customers/{rich}")
        await shots(browser, artifacts, "customer")
        redemption_id = redeemed.json()["redemption_id"]
        await browser.submit(f"form:has(input[name='redemption_id'][value='{redemption_id}'])", {})
        assert "Marked as handed over" in await browser.html()
        mine = (await admin.get(f"/v1/customers/{rich}/reward-redemptions")).json()["items"]
        assert next(r for r in mine if r["redemption_id"] == redemption_id)["status"] == "fulfilled"

        # another, handed over from the rewards page's queue of every customer's pending items
        second = await admin.post(
            f"/v1/customers/{rich}/reward-redemptions",
            json={"reward_id": reward.json()["id"], "reference": "console-tote-2"},
        )
        assert second.status_code == 201, second.text
        second_id = second.json()["redemption_id"]
        await browser.goto(origin + "/console/rewards")
        html = await browser.html()
        assert f'value="{second_id}"' in html and f'value="{redemption_id}"' not in html
        assert "Refused" not in html
        assert_local(html, browser, origin)
        await shots(browser, artifacts, "rewards")
        await browser.submit(f"form:has(input[name='redemption_id'][value='{second_id}'])", {})
        assert "Marked as handed over" in await browser.html()
        mine = (await admin.get(f"/v1/customers/{rich}/reward-redemptions")).json()["items"]
        assert next(r for r in mine if r["redemption_id"] == second_id)["status"] == "fulfilled"

        for name, path in (
            ("experiments", "/console/experiments"),
            ("webhooks", "/console/webhooks"),
            ("points", "/console/points"),
            ("surveys", "/console/surveys"),
            ("api-keys", "/console/api-keys"),
        ):
            await browser.goto(origin + path)
            html = await browser.html()
            assert "Refused" not in html, path
            assert_local(html, browser, origin)
            await shots(browser, artifacts, name)

        # /docs draws Swagger UI from the gateway's own files
        browser.requested.clear()
        await browser.goto(origin + "/docs")
        for _ in range(100):
            if await browser.evaluate("!!document.querySelector('.swagger-ui .opblock')"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("Swagger UI did not render")
        assert_local(await browser.html(), browser, origin)
        assert any(u.endswith("/docs/assets/swagger-ui-bundle.js") for u in browser.requested)
