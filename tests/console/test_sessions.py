"""The console's sign-in, session and CSRF rules, over real HTTP: what must be refused is refused and changes
nothing; a partner key sees and changes only what its scopes allow."""

from __future__ import annotations

import asyncpg
import httpx

from tests.conftest import ADMIN_KEY, Platform
from tests.console.conftest import browser_client, csrf_of, sign_in
from tests.support.pages import every_item


async def _campaign_names(admin: httpx.AsyncClient) -> list[str]:
    return [c["name"] for c in await every_item(admin, "/v1/coupon-campaigns")]


async def test_the_console_needs_a_session(platform: Platform) -> None:
    async with browser_client(platform) as client:
        root = await client.get("/console")
        assert root.status_code == 303 and root.headers["location"] == "/console/"
        home = await client.get("/console/")
        assert home.status_code == 303 and home.headers["location"].startswith("/console/login?next=/console/")
        for page in ("/console/campaigns", "/console/api-keys", "/console/deliveries"):
            assert (await client.get(page)).status_code == 303, page
        refused = await client.post("/console/campaigns", data={"name": "no session", "csrf": "x"})
        assert refused.status_code == 401
        assert (await client.get("/console//")).status_code == 400
        assert (await client.get("/console/campaigns/")).status_code == 400


async def test_sign_in_sets_a_strict_http_only_cookie_and_refuses_bad_keys(platform: Platform) -> None:
    async with browser_client(platform) as client:
        wrong = await sign_in(client, "rcp_not-a-key")
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert "rcp_console" not in client.cookies
        # the sign-in form's own token: a post without it (from another site) signs no one in
        forged = await client.post("/console/login", data={"key": ADMIN_KEY, "csrf": "guessed"})
        assert forged.status_code == 403 and "rcp_console" not in client.cookies

        signed_in = await sign_in(client, ADMIN_KEY)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console/"
        cookie = next(v for k, v in signed_in.headers.multi_items() if k == "set-cookie" and "rcp_console=" in v)
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        assert ADMIN_KEY not in cookie
        home = await client.get("/console/")
        assert home.status_code == 200 and "Sign out" in home.text
        assert "script-src" not in home.headers["content-security-policy"]
        assert "default-src 'none'" in home.headers["content-security-policy"]


async def test_a_customer_token_cannot_sign_in(platform: Platform, admin: httpx.AsyncClient) -> None:
    token = (await admin.post("/v1/customer-tokens", json={"customer_id": "console-c1"})).json()["token"]
    async with browser_client(platform) as client:
        assert (await sign_in(client, token)).status_code == 401


async def test_every_form_needs_its_csrf_token(
    platform: Platform, console: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    page = await console.get("/console/campaigns")
    token = csrf_of(page.text)
    body = {"name": "csrf-probe", "discount_type": "percent", "value": "10"}
    assert (await console.post("/console/campaigns", data=body)).status_code == 403
    assert (await console.post("/console/campaigns", data={**body, "csrf": "x" + token})).status_code == 403
    other_site = await console.post(
        "/console/campaigns", data={**body, "csrf": token}, headers={"Origin": "https://attacker.example"}
    )
    assert other_site.status_code == 403
    assert "csrf-probe" not in await _campaign_names(admin)
    made = await console.post("/console/campaigns", data={**body, "csrf": token})
    assert made.status_code == 303 and "csrf-probe" in await _campaign_names(admin)


async def test_sign_out_and_expiry_end_the_session(platform: Platform, console: httpx.AsyncClient) -> None:
    cookie = console.cookies["rcp_console"]
    token = csrf_of((await console.get("/console/")).text)
    out = await console.post("/console/logout", data={"csrf": token})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    async with browser_client(platform) as replayed:
        replayed.cookies.set("rcp_console", cookie, path="/console")
        assert (await replayed.get("/console/")).status_code == 303

        assert (await sign_in(replayed, ADMIN_KEY)).status_code == 303
        assert (await replayed.get("/console/campaigns")).status_code == 200
        # idle past CONSOLE_IDLE_SECONDS (30 minutes by default)
        connection = await asyncpg.connect(platform.env["DATABASE_URL"], server_settings={"search_path": "gateway"})
        try:
            await connection.execute("UPDATE console_sessions SET last_seen_at = now() - interval '31 minutes'")
        finally:
            await connection.close()
        assert (await replayed.get("/console/campaigns")).status_code == 303


async def test_a_partner_key_sees_and_changes_what_its_scopes_allow(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    created = (await admin.post("/v1/api-keys", json={"name": "console reader", "scopes": ["coupons:read"]})).json()
    async with browser_client(platform) as client:
        assert (await sign_in(client, created["key"])).status_code == 303
        campaigns = await client.get("/console/campaigns")
        assert campaigns.status_code == 200 and "New campaign" not in campaigns.text
        refused = await client.post(
            "/console/campaigns",
            data={"name": "partner-probe", "discount_type": "percent", "value": "5", "csrf": csrf_of(campaigns.text)},
        )
        assert refused.status_code == 403 and "coupons:write" in refused.text
        assert "partner-probe" not in await _campaign_names(admin)
        assert (await client.get("/console/api-keys")).status_code == 403
        assert (await client.get("/console/deliveries")).status_code == 403
        points = await client.get("/console/points")
        assert points.status_code == 200 and "points:read" in points.text
        home = await client.get("/console/")
        assert home.status_code == 200 and 'id="chart-coupons"' in home.text and 'id="chart-liability"' not in home.text

        # revoking the key ends its sessions at once
        assert (await admin.delete(f"/v1/api-keys/{created['id']}")).status_code == 204
        assert (await client.get("/console/campaigns")).status_code == 303
