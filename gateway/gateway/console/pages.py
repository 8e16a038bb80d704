"""The console's pages. Each handler reads what it shows through the public API's operations as the signed-in
key (`Console.caller`), so a partner key sees and changes exactly what its scopes allow; forms post back to the
page they came from and redirect (POST, redirect, GET), with a short note of what happened."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from gateway import api_keys
from gateway.console import charts, metrics, sessions
from gateway.console.caller import ApiResult
from gateway.console.web import (
    COOKIE,
    HEADERS,
    LOGIN_COOKIE,
    Console,
    ConsoleDep,
    console_router,
    form_of,
    new_login_nonce,
    page,
    redirect,
    safe_next,
    set_cookie,
    verify_csrf,
)
from gateway.principals import SCOPES, Authenticator
from gateway.routing import PARAMETERS
from gateway.state import AUTHENTICATOR, LIMITS, SETTINGS
from kit import events
from kit.db import SessionDep
from kit.errors import DomainError, NotFound, Unauthorized
from kit.webhooks import EVENT_TYPES

__all__ = ["router"]

router = console_router()
STATIC = Path(__file__).parent / "static"
_ASSET_TYPES = {"css": "text/css; charset=utf-8", "svg": "image/svg+xml", "png": "image/png", "js": "text/javascript"}
NOTES = {
    "created": "Created.",
    "saved": "Saved.",
    "extended": "The campaign's end date is changed.",
    "deactivated": "Deactivated.",
    "activated": "Activated.",
    "generating": "Codes are being generated; the count below grows as they are made.",
    "issued": "A code was issued to the customer.",
    "revoked": "The key is revoked.",
    "retried": "The delivery is queued again.",
    "adjusted": "The points are adjusted.",
    "stopped": "The experiment is stopped.",
    "fulfilled": "Marked as handed over.",
    "cancelled": "Cancelled: the points and the stock are given back.",
}


def _render(console: Console, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    note = NOTES.get(console.request.query_params.get("done", ""))
    return page(console.request, template, status, console=console, note=note, **context)


def _back(path: str, done: str) -> Response:
    return redirect(f"{path}?done={done}")


def _results_or_refusal(result: ApiResult) -> list[Any]:
    return list(result.body.get("items", [])) if result.ok and isinstance(result.body, dict) else []


# --- sign-in -------------------------------------------------------------------------------------------------


@router.get("/console")
async def console_root() -> Response:
    return redirect("/console/")


@router.get("/console/static/{asset}")
async def static_asset(asset: str) -> Response:
    resource = STATIC / asset
    if "/" in asset or not resource.is_file():
        raise NotFound("No such file.")
    media_type = _ASSET_TYPES[asset.rsplit(".", 1)[1]]
    return Response(resource.read_bytes(), media_type=media_type, headers={"Cache-Control": "max-age=3600"})


def _login_page(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    nonce = new_login_nonce()
    response = page(
        request,
        "login.html",
        status,
        nonce=nonce,
        error=error,
        next=safe_next(request.query_params.get("next")),
    )
    set_cookie(response, request, LOGIN_COOKIE, nonce)
    return response


@router.get("/console/login")
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/console/login")
async def login(request: Request, session: SessionDep) -> Response:
    """The form's nonce must match the cookie set with it (no signing someone in from another site), and failed
    keys count toward the front door's per-address limit on failed authentication."""
    form = await form_of(request)
    try:
        verify_csrf(request, request.cookies.get(LOGIN_COOKIE, ""), form)
    except DomainError:
        return _login_page(request, 403, "The sign-in form expired; please try again.")
    limits = LIMITS.of(request.app)
    address = request.client.host if request.client else "unknown"
    try:
        await limits.check_failed_authentication(address)
    except DomainError as exc:
        return _login_page(request, exc.status, exc.detail)
    authenticator: Authenticator = AUTHENTICATOR.of(request.app)
    key = form.get("key", "").strip()
    try:
        principal = await authenticator.authenticate(f"Bearer {key}") if key else None
    except Unauthorized:
        principal = None
    if principal is None or principal.kind == "customer":
        await limits.record_failed_authentication(address)
        return _login_page(request, 401, "That key is not valid. Use the admin key or a partner API key.")
    settings = SETTINGS.of(request.app)
    token, _ = await sessions.start(
        session, principal, admin_key=settings.admin_key, lifetime_seconds=settings.console_session_seconds
    )
    response = redirect(safe_next(form.get("next")))
    set_cookie(response, request, COOKIE, token)
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/console/logout")
async def logout(console: ConsoleDep, session: SessionDep) -> Response:
    await sessions.end(session, console.token_hash)
    response = redirect("/console/login")
    response.delete_cookie(COOKIE, path="/console")
    return response


# --- home ----------------------------------------------------------------------------------------------------


def _month(value: str | datetime) -> str:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%b %Y")


async def _nps_chart(console: Console) -> charts.Chart | None:
    surveys = _results_or_refusal(await console.caller.call("GET", "/v1/surveys", params={"limit": 20}))
    if not surveys:
        return None
    survey = surveys[0]
    results = await console.caller.call("GET", f"/v1/surveys/{survey['id']}/results", params={"interval": "week"})
    if not results.ok:
        return None
    trend = results.body["trend"][-26:]
    labels = [datetime.fromisoformat(p["period_start"]).strftime("%d %b") for p in trend]
    scores = [p["nps"] for p in trend]
    latest = next((s for s in reversed(scores) if s is not None), None)
    summary = (
        f"NPS of “{survey['name']}” by week over {len(trend)} weeks; the latest is {latest:.0f}."
        if latest is not None
        else f"No answers to “{survey['name']}” yet."
    )
    return charts.lines(
        "nps", "NPS by week", summary, labels, [("NPS", scores)], label_heading="week", low=-100, high=100
    )


async def _nothing() -> None:
    return None


@router.get("/console/")
async def home(console: ConsoleDep, session: SessionDep) -> HTMLResponse:
    caller = console.caller
    liability_call = caller.call("GET", "/v1/points/liability")
    campaigns_call = caller.call("GET", "/v1/coupon-campaigns", params={"limit": 100})
    # the gateway's own figures (its database) while the services answer: one round of waiting, not two
    own_call = metrics.figures(session) if console.can("GET", "/v1/purchases/x") else _nothing()
    liability, campaigns, nps, figures = await asyncio.gather(
        liability_call, campaigns_call, _nps_chart(console), own_call
    )
    shown: list[charts.Chart] = []
    hidden: list[str] = []

    if figures is not None:
        weeks = figures.weeks
        labels = [w.start.strftime("%d %b") for w in weeks]
        total = sum(w.purchases for w in weeks)
        shown.append(
            charts.bars(
                "weekly",
                "Purchases and returning customers by week",
                f"{total:,} purchases over the last {len(weeks)} weeks with purchases; "
                f"{sum(w.returning_customers for w in weeks):,} visits by customers who had bought before.",
                labels,
                [
                    ("purchases", [w.purchases for w in weeks]),
                    ("returning customers", [w.returning_customers for w in weeks]),
                ],
                label_heading="week of",
            )
        )
        cohorts = figures.cohorts
        shown.append(
            charts.bars(
                "cohorts",
                "Repeat-purchase rate by first-purchase month",
                "The share of each month's new customers who bought again: "
                + ", ".join(f"{_month(c.month)} {c.repeat_rate:.0%}" for c in cohorts[-3:])
                + ".",
                [c.month.strftime("%b %Y") for c in cohorts],
                [("repeat rate %", [round(100 * c.repeat_rate, 1) for c in cohorts])],
                label_heading="first purchase",
                fmt=lambda v: f"{v:.1f}%",
            )
        )
    else:
        hidden.append("purchases (scope purchases:write)")

    if liability.ok:
        months = [m for m in liability.body["by_expiry_month"] if m["month"]][:18]
        never = sum(m["points"] for m in liability.body["by_expiry_month"] if not m["month"])
        shown.append(
            charts.bars(
                "liability",
                "Points liability by expiry month",
                f"{liability.body['total_points']:,} points outstanding across "
                f"{liability.body['accounts_with_points']:,} accounts"
                + (f"; {never:,} never expire." if never else "."),
                [datetime.strptime(m["month"], "%Y-%m").strftime("%b %Y") for m in months],
                [("points", [m["points"] for m in months])],
                label_heading="expiry month",
            )
        )
    else:
        hidden.append("points liability (scope points:read)")

    if nps is not None:
        shown.append(nps)
    elif not console.can("GET", "/v1/surveys"):
        hidden.append("NPS (scope surveys:read)")

    if campaigns.ok:
        items = sorted(campaigns.body["items"], key=lambda c: c["stats"]["issued"], reverse=True)[:8]
        issued = sum(c["stats"]["issued"] for c in campaigns.body["items"])
        redeemed = sum(c["stats"]["redeemed"] for c in campaigns.body["items"])
        rate = f" ({redeemed / issued:.0%})" if issued else ""
        shown.append(
            charts.bars(
                "coupons",
                "Coupons issued → redeemed",
                f"{issued:,} coupons issued to customers, {redeemed:,} redeemed{rate}, across "
                f"{len(campaigns.body['items'])} campaigns.",
                [c["name"][:14] for c in items],
                [
                    ("issued", [c["stats"]["issued"] for c in items]),
                    ("redeemed", [c["stats"]["redeemed"] for c in items]),
                ],
                label_heading="campaign",
            )
        )
    else:
        hidden.append("coupons (scope coupons:read)")
    return _render(console, "home.html", charts=shown, hidden=hidden)


# --- coupon campaigns ----------------------------------------------------------------------------------------


def _decimal(value: str) -> str | None:
    try:
        return str(Decimal(value)) if value.strip() else None
    except InvalidOperation:
        return value  # the API says what is wrong with it


def _int(value: str) -> int | str | None:
    value = value.strip()
    if not value:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def _end_of_day(value: str) -> str | None:
    """A date from a date field, as the end of that day in UTC."""
    if not value.strip():
        return None
    try:
        return datetime.combine(datetime.fromisoformat(value).date(), time(23, 59, 59), UTC).isoformat()
    except ValueError:
        return value


def _start_of_day(value: str) -> str | None:
    if not value.strip():
        return None
    try:
        return datetime.combine(datetime.fromisoformat(value).date(), time(0, 0), UTC).isoformat()
    except ValueError:
        return value


def _campaign_body(form: dict[str, str]) -> dict[str, Any]:
    discount: dict[str, Any] = {"type": form.get("discount_type", "percent"), "value": _decimal(form.get("value", ""))}
    if form.get("currency"):
        discount["currency"] = form["currency"].strip().upper()
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "discount": discount,
        "code": {"prefix": form.get("prefix", "").strip(), "charset": form.get("charset", "unambiguous")},
        "limits": {k: v for k in ("per_customer", "total") if (v := _int(form.get(k, ""))) is not None},
    }
    if valid_until := _end_of_day(form.get("valid_until", "")):
        body["valid_until"] = valid_until
    return body


@router.get("/console/campaigns")
async def campaigns(console: ConsoleDep) -> HTMLResponse:
    listed = await console.caller.call(
        "GET", "/v1/coupon-campaigns", params={"limit": 50, "cursor": console.request.query_params.get("cursor")}
    )
    return _render(console, "campaigns.html", listed=listed, form={}, error=None)


@router.post("/console/campaigns")
async def create_campaign(console: ConsoleDep) -> Response:
    form = await form_of(console.request)
    created = await console.caller.call(
        "POST", "/v1/coupon-campaigns", json=_campaign_body(form), idempotency_key=form.get("csrf_once")
    )
    if created.ok:
        return _back(f"/console/campaigns/{created.body['id']}", "created")
    listed = await console.caller.call("GET", "/v1/coupon-campaigns", params={"limit": 50})
    return _render(console, "campaigns.html", created.status, listed=listed, form=form, error=created.message)


async def _campaign_page(
    console: Console, campaign_id: str, status: int = 200, error: str | None = None
) -> HTMLResponse:
    campaign = await console.caller.call("GET", f"/v1/coupon-campaigns/{campaign_id}")
    if not campaign.ok:
        return _render(console, "refused.html", campaign.status, title="Campaign", text=campaign.message)
    rules = _results_or_refusal(await console.caller.call("GET", "/v1/coupon-rules", params={"limit": 100}))
    return _render(
        console,
        "campaign.html",
        status,
        campaign=campaign.body,
        rules=[r for r in rules if r["campaign_id"] == campaign_id],
        error=error,
    )


@router.get("/console/campaigns/{campaign_id}")
async def campaign(campaign_id: uuid.UUID, console: ConsoleDep) -> HTMLResponse:
    return await _campaign_page(console, str(campaign_id))


@router.post("/console/campaigns/{campaign_id}")
async def change_campaign(campaign_id: uuid.UUID, console: ConsoleDep) -> Response:
    form = await form_of(console.request)
    path = f"/v1/coupon-campaigns/{campaign_id}"
    action = form.get("action")
    if action == "extend":
        result = await console.caller.call(
            "PATCH", path, json={"valid_until": _end_of_day(form.get("valid_until", ""))}
        )
        done = "extended"
    elif action in ("deactivate", "activate"):
        result = await console.caller.call("PATCH", path, json={"active": action == "activate"})
        done = action + "d"
    elif action == "generate":
        result = await console.caller.call("POST", path + "/codes", json={"count": _int(form.get("count", ""))})
        done = "generating"
    elif action == "issue":
        result = await console.caller.call(
            "POST", path + "/issuances", json={"customer_id": form.get("customer_id", "").strip()}
        )
        done = "issued"
    else:
        raise NotFound("No such action.")
    if result.ok:
        return _back(f"/console/campaigns/{campaign_id}", done)
    return await _campaign_page(console, str(campaign_id), result.status, result.message)


@router.get("/console/campaigns/{campaign_id}/codes.csv")
async def campaign_codes(campaign_id: uuid.UUID, console: ConsoleDep) -> Response:
    status, body = await console.caller.stream(f"/v1/coupon-campaigns/{campaign_id}/codes", {"format": "csv"})
    if status != 200:
        return _render(console, "refused.html", status, title="Codes", text="These codes cannot be exported.")
    return StreamingResponse(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="codes-{campaign_id}.csv"', **HEADERS},
    )


# --- surprise rules ------------------------------------------------------------------------------------------


async def _rules_page(
    console: Console, status: int = 200, error: str | None = None, form: dict[str, str] | None = None
) -> HTMLResponse:
    rules, campaigns_listed = await asyncio.gather(
        console.caller.call("GET", "/v1/coupon-rules", params={"limit": 100}),
        console.caller.call("GET", "/v1/coupon-campaigns", params={"limit": 100}),
    )
    names = {c["id"]: c["name"] for c in _results_or_refusal(campaigns_listed)}
    return _render(console, "rules.html", status, rules=rules, campaigns=names, error=error, form=form or {})


@router.get("/console/rules")
async def rules(console: ConsoleDep) -> HTMLResponse:
    return await _rules_page(console)


@router.post("/console/rules")
async def change_rules(console: ConsoleDep) -> Response:
    form = await form_of(console.request)
    if form.get("action") == "deactivate":
        rule_id = form.get("rule_id", "")
        try:
            uuid.UUID(rule_id)
        except ValueError:
            raise NotFound("No such rule.") from None
        result = await console.caller.call("PATCH", f"/v1/coupon-rules/{rule_id}", json={"active": False})
        done = "deactivated"
    else:
        trigger: dict[str, Any] = {"type": form.get("trigger", "")}
        if trigger["type"] == "nth_purchase":
            trigger["n"] = _int(form.get("n", ""))
        elif trigger["type"] == "order_total_at_least":
            trigger["amount"] = _decimal(form.get("amount", ""))
            trigger["currency"] = form.get("currency", "").strip().upper()
        result = await console.caller.call(
            "POST", "/v1/coupon-rules", json={"campaign_id": form.get("campaign_id", ""), "trigger": trigger}
        )
        done = "created"
    if result.ok:
        return _back("/console/rules", done)
    return await _rules_page(console, result.status, result.message, form)


# --- points --------------------------------------------------------------------------------------------------


async def _points_page(console: Console, status: int = 200, error: str | None = None) -> HTMLResponse:
    earning, tiers, liability = await asyncio.gather(
        console.caller.call("GET", "/v1/points/rules"),
        console.caller.call("GET", "/v1/points/tiers"),
        console.caller.call("GET", "/v1/points/liability"),
    )
    return _render(console, "points.html", status, earning=earning, tiers=tiers, liability=liability, error=error)


@router.get("/console/points")
async def points(console: ConsoleDep) -> HTMLResponse:
    return await _points_page(console)


def _tiers_from_text(text: str) -> list[dict[str, Any]] | str:
    tiers: list[dict[str, Any]] = []
    for number, line in enumerate(text.strip().splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            return f"Line {number}: write name, threshold, multiplier."
        tiers.append({"name": parts[0], "threshold": _int(parts[1]), "earn_multiplier": _decimal(parts[2])})
    return tiers


@router.post("/console/points")
async def change_points(console: ConsoleDep) -> Response:
    form = await form_of(console.request)
    action = form.get("action")
    if action == "tiers":
        tiers = _tiers_from_text(form.get("tiers", ""))
        if isinstance(tiers, str):
            return await _points_page(console, 422, tiers)
        result = await console.caller.call("PUT", "/v1/points/tiers", json=tiers)
    else:
        current = await console.caller.call("GET", "/v1/points/rules")
        if not current.ok:
            return await _points_page(console, current.status, current.message)
        rules_body = dict(current.body)
        if action == "earning":
            rules_body["points_per_currency_unit"] = _decimal(form.get("points_per_currency_unit", ""))
            rules_body["expires_after_days"] = _int(form.get("expires_after_days", ""))
        elif action == "add_bonus":
            bonus: dict[str, Any] = {
                "name": form.get("name", "").strip(),
                "starts_at": _start_of_day(form.get("starts_at", "")),
                "ends_at": _end_of_day(form.get("ends_at", "")),
            }
            if form.get("kind") == "bonus_points":
                bonus["bonus_points"] = _int(form.get("amount", ""))
            else:
                bonus["multiplier"] = _decimal(form.get("amount", ""))
            categories = [c.strip() for c in form.get("categories", "").split(",") if c.strip()]
            if categories:
                bonus["categories"] = categories
            rules_body["bonus_campaigns"] = [*rules_body.get("bonus_campaigns", []), bonus]
        elif action == "remove_bonus":
            name = form.get("name", "")
            rules_body["bonus_campaigns"] = [b for b in rules_body.get("bonus_campaigns", []) if b["name"] != name]
        else:
            raise NotFound("No such action.")
        result = await console.caller.call("PUT", "/v1/points/rules", json=rules_body)
    if result.ok:
        return _back("/console/points", "saved")
    return await _points_page(console, result.status, result.message)


# --- surveys -------------------------------------------------------------------------------------------------


@router.get("/console/surveys")
async def surveys(console: ConsoleDep) -> HTMLResponse:
    listed = await console.caller.call("GET", "/v1/surveys", params={"limit": 50})
    return _render(console, "surveys.html", listed=listed, error=None)


@router.post("/console/surveys")
async def create_survey(console: ConsoleDep) -> Response:
    form = await form_of(console.request)
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "questions": [
            {"id": "nps", "type": "nps", "text": "How likely are you to recommend us to a friend?", "required": True},
            {"id": "comment", "type": "text", "text": "Anything you would like to tell us?"},
        ],
        "send_after_purchase": form.get("send_after_purchase") == "on",
    }
    if reward := _int(form.get("reward_points", "")):
        body["reward_points"] = reward
    created = await console.caller.call("POST", "/v1/surveys", json=body)
    if created.ok:
        return _back(f"/console/surveys/{created.body['id']}", "created")
    listed = await console.caller.call("GET", "/v1/surveys", params={"limit": 50})
    return _render(console, "surveys.html", created.status, listed=listed, error=created.message)


@router.get("/console/surveys/{survey_id}")
async def survey(survey_id: uuid.UUID, console: ConsoleDep) -> HTMLResponse:
    interval = console.request.query_params.get("interval", "week")
    interval = interval if interval in ("day", "week", "month") else "week"
    found, results = await asyncio.gather(
        console.caller.call("GET", f"/v1/surveys/{survey_id}"),
        console.caller.call("GET", f"/v1/surveys/{survey_id}/results", params={"interval": interval}),
    )
    if not found.ok:
        return _render(console, "refused.html", found.status, title="Survey", text=found.message)
    trend_charts: list[charts.Chart] = []
    if results.ok:
        trend = results.body["trend"][-52:]
        labels = [datetime.fromisoformat(p["period_start"]).strftime("%d %b %y") for p in trend]
        trend_charts = [
            charts.lines(
                "trend-nps",
                f"NPS by {interval}",
                f"NPS per {interval} over {len(trend)} periods; overall {results.body['nps']['score']}.",
                labels,
                [("NPS", [p["nps"] for p in trend])],
                label_heading=interval,
                low=-100,
                high=100,
            ),
            charts.bars(
                "trend-responses",
                f"Responses by {interval}",
                f"{results.body['responded']:,} responses to {results.body['invited']:,} invitations.",
                labels,
                [("responses", [p["responses"] for p in trend])],
                label_heading=interval,
            ),
        ]
    return _render(console, "survey.html", survey=found.body, results=results, charts=trend_charts, interval=interval)


# --- customers -----------------------------------------------------------------------------------------------


@router.get("/console/customers")
async def find_customer(console: ConsoleDep) -> Response:
    wanted = console.request.query_params.get("id", "").strip()
    if wanted:
        import re

        if re.fullmatch(PARAMETERS["customer_id"], wanted):
            return redirect(f"/console/customers/{quote(wanted, safe='')}")
        return _render(
            console, "customers.html", 422, wanted=wanted, error="A customer id is 1-64 letters, digits or ._:-"
        )
    return _render(console, "customers.html", wanted="", error=None)


async def _customer_page(
    console: Console, customer_id: str, status: int = 200, error: str | None = None
) -> HTMLResponse:
    base = f"/v1/customers/{customer_id}"
    caller = console.caller
    points, ledger, coupons, surveys_taken, recommendations, catalogue, redemptions = await asyncio.gather(
        caller.call("GET", base + "/points"),
        caller.call("GET", base + "/points/transactions", params={"limit": 50}),
        caller.call("GET", base + "/coupons"),
        caller.call("GET", base + "/surveys"),
        caller.call("GET", base + "/recommendations", params={"limit": 10}),
        caller.call("GET", base + "/rewards", params={"limit": 50}),
        caller.call("GET", base + "/reward-redemptions", params={"limit": 50}),
    )
    return _render(
        console,
        "customer.html",
        status,
        customer_id=customer_id,
        points=points,
        ledger=ledger,
        coupons=coupons,
        surveys=surveys_taken,
        recommendations=recommendations,
        catalogue=catalogue,
        redemptions=redemptions,
        error=error,
        reference=f"console-{uuid.uuid4().hex[:16]}",
    )


@router.get("/console/customers/{customer_id}")
async def customer(customer_id: str, console: ConsoleDep) -> HTMLResponse:
    return await _customer_page(console, customer_id)


@router.post("/console/customers/{customer_id}")
async def change_customer(customer_id: str, console: ConsoleDep) -> Response:
    """Adjust the points, or fulfil or cancel one of the customer's reward redemptions."""
    form = await form_of(console.request)
    action = form.get("action", "adjust")
    if action in ("fulfil", "cancel"):
        redemption_id = form.get("redemption_id", "")
        try:
            uuid.UUID(redemption_id)
        except ValueError:
            raise NotFound("No such redemption.") from None
        operation = "fulfilment" if action == "fulfil" else "cancellation"
        result = await console.caller.call("POST", f"/v1/reward-redemptions/{redemption_id}/{operation}")
        done = "fulfilled" if action == "fulfil" else "cancelled"
    else:
        body: dict[str, Any] = {"points": _int(form.get("points", "")), "reference": form.get("reference", "")}
        if form.get("description", "").strip():
            body["description"] = form["description"].strip()
        result = await console.caller.call("POST", f"/v1/customers/{customer_id}/points/adjustments", json=body)
        done = "adjusted"
    if result.ok:
        return _back(f"/console/customers/{quote(customer_id, safe='')}", done)
    return await _customer_page(console, customer_id, result.status, result.message)


# --- failed deliveries ---------------------------------------------------------------------------------------


@router.get("/console/deliveries")
async def deliveries(console: ConsoleDep, session: SessionDep) -> HTMLResponse:
    if not console.can("GET", "/v1/admin/deliveries"):
        return _render(console, "refused.html", 403, title="Deliveries", text="Only the admin key sees deliveries.")
    state = console.request.query_params.get("status", "failed")
    state = state if state in ("failed", "pending", "delivered") else "failed"
    rows = await events.list_deliveries(session, state, 100, None)
    return _render(console, "deliveries.html", rows=rows, state=state)


@router.post("/console/deliveries")
async def retry_delivery(console: ConsoleDep, session: SessionDep) -> Response:
    form = await form_of(console.request)
    delivery_id = form.get("delivery_id", "")
    if not delivery_id.isdigit() or not console.can("POST", f"/v1/admin/deliveries/{delivery_id}/retry"):
        return _render(
            console, "refused.html", 403, title="Deliveries", text="Only the admin key re-drives deliveries."
        )
    await events.redrive(session, int(delivery_id))
    return _back("/console/deliveries", "retried")


# --- API keys ------------------------------------------------------------------------------------------------


@router.get("/console/api-keys")
async def keys(console: ConsoleDep, session: SessionDep) -> HTMLResponse:
    if not console.can("GET", "/v1/api-keys"):
        return _render(console, "refused.html", 403, title="API keys", text="Only the admin key manages API keys.")
    rows = await api_keys.list_keys(session, 200, None)
    return _render(console, "api_keys.html", rows=rows, scopes=sorted(SCOPES), created=None, error=None)


@router.post("/console/api-keys")
async def change_keys(console: ConsoleDep, session: SessionDep) -> Response:
    if not console.can("POST", "/v1/api-keys"):
        return _render(console, "refused.html", 403, title="API keys", text="Only the admin key manages API keys.")
    form = await console.request.form()
    if form.get("action") == "revoke":
        try:
            key_id = uuid.UUID(str(form.get("key_id", "")))
        except ValueError:
            raise NotFound("No such key.") from None
        AUTHENTICATOR.of(console.request.app).forget_api_key(await api_keys.revoke(session, key_id))
        return _back("/console/api-keys", "revoked")
    name = str(form.get("name", "")).strip()
    chosen = [str(s) for s in form.getlist("scopes") if str(s) in SCOPES]
    if not name or len(name) > 200 or not chosen:
        rows = await api_keys.list_keys(session, 200, None)
        return _render(
            console,
            "api_keys.html",
            422,
            rows=rows,
            scopes=sorted(SCOPES),
            created=None,
            error="A key needs a name (up to 200 characters) and at least one scope.",
        )
    created = await api_keys.create(session, name, chosen)
    rows = await api_keys.list_keys(session, 200, None)
    # shown once, on this page; never stored in the clear
    return _render(console, "api_keys.html", 201, rows=rows, scopes=sorted(SCOPES), created=created, error=None)


def query(**values: Any) -> str:
    return urlencode({k: v for k, v in values.items() if v})


# --- experiments ---------------------------------------------------------------------------------------------


@router.get("/console/experiments")
async def experiments(console: ConsoleDep) -> HTMLResponse:
    listed = await console.caller.call("GET", "/v1/experiments", params={"limit": 50})
    return _render(console, "experiments.html", listed=listed, error=None, form={})


@router.post("/console/experiments")
async def create_experiment(console: ConsoleDep) -> Response:
    form = await form_of(console.request)
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "lever": {"type": form.get("lever_type", ""), "id": form.get("lever_id", "").strip()},
        "holdout_percent": _int(form.get("holdout_percent", "")),
    }
    if ends_at := _end_of_day(form.get("ends_at", "")):
        body["ends_at"] = ends_at
    created = await console.caller.call("POST", "/v1/experiments", json=body)
    if created.ok:
        return _back(f"/console/experiments/{created.body['id']}", "created")
    listed = await console.caller.call("GET", "/v1/experiments", params={"limit": 50})
    return _render(console, "experiments.html", created.status, listed=listed, error=created.message, form=form)


def _verdict(lift: dict[str, Any]) -> str:
    return " (significant)." if lift["significant"] else " (not significant)."


def _percent_points(value: float) -> str:
    return f"{100 * value:+.1f} pp"


async def _experiment_page(
    console: Console, experiment_id: str, status: int = 200, error: str | None = None
) -> HTMLResponse:
    window = _int(console.request.query_params.get("window_days", "30"))
    window = window if isinstance(window, int) and 1 <= window <= 365 else 30
    found, results = await asyncio.gather(
        console.caller.call("GET", f"/v1/experiments/{experiment_id}"),
        console.caller.call("GET", f"/v1/experiments/{experiment_id}/results", params={"window_days": window}),
    )
    if not found.ok:
        return _render(console, "refused.html", found.status, title="Experiment", text=found.message)
    drawn: list[charts.Chart] = []
    if results.ok:
        lift = results.body["lift"]
        if lift.get("repeat_rate"):
            r = lift["repeat_rate"]
            drawn.append(
                charts.intervals(
                    "lift-repeat",
                    "Lift in repeat-purchase rate (treatment − holdout)",
                    f"{_percent_points(r['absolute'])}, 95% interval {_percent_points(r['ci95'][0])} to "
                    f"{_percent_points(r['ci95'][1])}" + _verdict(r),
                    [("repeat rate", r["absolute"], r["ci95"][0], r["ci95"][1])],
                    fmt=_percent_points,
                )
            )
        if lift.get("revenue_per_customer"):
            r = lift["revenue_per_customer"]
            drawn.append(
                charts.intervals(
                    "lift-revenue",
                    "Lift in revenue per customer",
                    f"{r['absolute']:+.2f}, 95% interval {r['ci95'][0]:+.2f} to {r['ci95'][1]:+.2f}" + _verdict(r),
                    [("revenue / customer", r["absolute"], r["ci95"][0], r["ci95"][1])],
                    fmt=lambda v: f"{v:+.2f}",
                )
            )
    return _render(
        console,
        "experiment.html",
        status,
        experiment=found.body,
        results=results,
        charts=drawn,
        window=window,
        error=error,
    )


@router.get("/console/experiments/{experiment_id}")
async def experiment(experiment_id: uuid.UUID, console: ConsoleDep) -> HTMLResponse:
    return await _experiment_page(console, str(experiment_id))


@router.post("/console/experiments/{experiment_id}")
async def stop_experiment(experiment_id: uuid.UUID, console: ConsoleDep) -> Response:
    stopped = await console.caller.call("POST", f"/v1/experiments/{experiment_id}/stop")
    if stopped.ok:
        return _back(f"/console/experiments/{experiment_id}", "stopped")
    return await _experiment_page(console, str(experiment_id), stopped.status, stopped.message)


# --- webhooks ------------------------------------------------------------------------------------------------


@router.get("/console/webhooks")
async def webhooks(console: ConsoleDep) -> HTMLResponse:
    listed = await console.caller.call("GET", "/v1/webhook-endpoints", params={"limit": 100})
    return _render(console, "webhooks.html", listed=listed, events=EVENT_TYPES, created=None, error=None)


@router.post("/console/webhooks")
async def create_webhook(console: ConsoleDep) -> Response:
    form = await console.request.form()
    body = {
        "url": str(form.get("url", "")).strip(),
        "events": [str(e) for e in form.getlist("events")],
        "description": str(form.get("description", "")).strip(),
    }
    created = await console.caller.call("POST", "/v1/webhook-endpoints", json=body)
    listed = await console.caller.call("GET", "/v1/webhook-endpoints", params={"limit": 100})
    # the secret is shown once, on this answer
    return _render(
        console,
        "webhooks.html",
        created.status,
        listed=listed,
        events=EVENT_TYPES,
        created=created.body if created.ok else None,
        error=None if created.ok else created.message,
    )


async def _webhook_page(console: Console, endpoint_id: str, status: int = 200, **extra: Any) -> HTMLResponse:
    found, deliveries = await asyncio.gather(
        console.caller.call("GET", f"/v1/webhook-endpoints/{endpoint_id}"),
        console.caller.call("GET", f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params={"limit": 50}),
    )
    if not found.ok:
        return _render(console, "refused.html", found.status, title="Webhook endpoint", text=found.message)
    extra.setdefault("error", None)
    extra.setdefault("secret", None)
    return _render(console, "webhook.html", status, endpoint=found.body, deliveries=deliveries, **extra)


@router.get("/console/webhooks/{endpoint_id}")
async def webhook(endpoint_id: uuid.UUID, console: ConsoleDep) -> HTMLResponse:
    return await _webhook_page(console, str(endpoint_id))


@router.post("/console/webhooks/{endpoint_id}")
async def change_webhook(endpoint_id: uuid.UUID, console: ConsoleDep) -> Response:
    form = await form_of(console.request)
    path = f"/v1/webhook-endpoints/{endpoint_id}"
    action = form.get("action")
    if action == "retry":
        delivery_id = form.get("delivery_id", "")
        if not delivery_id.isdigit():
            raise NotFound("No such delivery.")
        result = await console.caller.call("POST", f"/v1/webhook-deliveries/{delivery_id}/retry")
        done = "retried"
    elif action in ("disable", "enable"):
        result = await console.caller.call("PATCH", path, json={"active": action == "enable"})
        done = "deactivated" if action == "disable" else "activated"
    elif action == "rotate":
        result = await console.caller.call("POST", path + "/secret-rotations")
        if result.ok:
            return await _webhook_page(console, str(endpoint_id), secret=result.body["secret"])
        done = ""
    else:
        raise NotFound("No such action.")
    if result.ok:
        return _back(f"/console/webhooks/{endpoint_id}", done)
    return await _webhook_page(console, str(endpoint_id), result.status, error=result.message)


# --- rewards catalogue ---------------------------------------------------------------------------------------


async def _rewards_page(
    console: Console, status: int = 200, error: str | None = None, form: dict[str, str] | None = None
) -> HTMLResponse:
    """The catalogue, and the fulfilment queue (every customer's pending items, newest first, `?cursor=` pages)."""
    cursor = console.request.query_params.get("cursor")
    rewards, campaigns_listed, pending = await asyncio.gather(
        console.caller.call("GET", "/v1/rewards", params={"limit": 100}),
        console.caller.call("GET", "/v1/coupon-campaigns", params={"limit": 100}),
        console.caller.call(
            "GET", "/v1/reward-redemptions", params={"status": "pending", "limit": 50, "cursor": cursor}
        ),
    )
    names = {c["id"]: c["name"] for c in _results_or_refusal(campaigns_listed)}
    return _render(
        console,
        "rewards.html",
        status,
        rewards=rewards,
        campaigns=names,
        pending=pending,
        paged=bool(cursor),
        error=error,
        form=form or {},
    )


@router.get("/console/rewards")
async def rewards(console: ConsoleDep) -> HTMLResponse:
    return await _rewards_page(console)


@router.post("/console/rewards")
async def change_rewards(console: ConsoleDep) -> Response:
    form = await form_of(console.request)
    action = form.get("action")
    if action == "fulfil":
        redemption_id = form.get("redemption_id", "")
        try:
            uuid.UUID(redemption_id)
        except ValueError:
            raise NotFound("No such redemption.") from None
        result = await console.caller.call("POST", f"/v1/reward-redemptions/{redemption_id}/fulfilment")
        done = "fulfilled"
    elif action in ("deactivate", "activate"):
        reward_id = form.get("reward_id", "")
        try:
            uuid.UUID(reward_id)
        except ValueError:
            raise NotFound("No such reward.") from None
        result = await console.caller.call("PATCH", f"/v1/rewards/{reward_id}", json={"active": action == "activate"})
        done = action + "d"
    else:
        body: dict[str, Any] = {
            "name": form.get("name", "").strip(),
            "description": form.get("description", "").strip(),
            "kind": form.get("kind", "item"),
            "cost_points": _int(form.get("cost_points", "")),
        }
        if body["kind"] == "coupon":
            body["campaign_id"] = form.get("campaign_id", "")
        for field in ("stock", "per_customer_limit"):
            if (value := _int(form.get(field, ""))) is not None:
                body[field] = value
        if form.get("min_tier", "").strip():
            body["min_tier"] = form["min_tier"].strip()
        result = await console.caller.call("POST", "/v1/rewards", json=body)
        done = "created"
    if result.ok:
        return _back("/console/rewards", done)
    return await _rewards_page(console, result.status, result.message, form)
