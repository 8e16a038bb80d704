"""`make demo`: replay the UCI Online Retail sample (December 2010) into a running `make run` platform, through
the public API only, then show three customers' overviews.

    python -m scripts.demo [--url http://127.0.0.1:8000] [--key ADMIN_KEY] [--limit N] [--concurrency 16]

1. Sets up the levers (each found by name if it exists, so a second run changes nothing): earning rules with a
   December bonus on Christmas goods, three tiers, a "thank you" coupon campaign with a surprise rule on the 2nd
   purchase, an apology campaign for unhappy survey answers, and a post-purchase survey with a points reward.
2. Imports every invoice of the sample as a purchase (`purchase_id` = `uci-<invoice>`, email
   `customer-<id>@example.com`) through `POST /v1/purchases:batch`, 1,000 a call, with a progress bar.
   Purchases are idempotent by `purchase_id`: a re-run answers "duplicate" and earns nothing twice.
3. Waits until the gateway has delivered every purchase to points, coupons, recommendations and surveys.
4. Retrains the recommender on what it has just learnt, and waits for the new model.
5. The month is history: it earned points but woke no one (a purchase's own time decides what reaches the
   customer). The month's first-time buyer comes back today (`demo-today-<id>`, once): a 2nd purchase, now,
   so the surprise rule thanks them with a coupon and the survey is scheduled.
6. Prints the overview of three customers: a regular, a third-time buyer, the one who came back today.
7. Ends with the report of an experiment on the Advent bonus (a 50% holdout since 2010-12-01): over a replay it
   can only show no significant lift, and says so.

The admin key is `--key`, else `LOYALTY_ADMIN_KEY`, else the one `make run` stored in `.data/secrets.env`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from tqdm import tqdm

from scripts import importer
from scripts.online_retail import SAMPLE, Invoice, invoices
from scripts.replay import purchase_payload

DEFAULT_URL = "http://127.0.0.1:8000"

SURPRISE_EVERY = 2
SURPRISE_CAMPAIGN = "Demo: a thank-you on the 2nd purchase"
APOLOGY_CAMPAIGN = "Demo: sorry, and thank you for telling us"
SURVEY = "Demo: how was your order?"
EXPERIMENT = "Demo: does the Advent bonus bring customers back?"
EARNING_RULES: dict[str, Any] = {
    "points_per_currency_unit": "1",
    "category_multipliers": {"Christmas": "1.5"},
    "bonus_campaigns": [
        {
            "name": "Advent double points on Christmas goods",
            "multiplier": "2",
            "starts_at": "2010-12-01T00:00:00Z",
            "ends_at": "2010-12-25T00:00:00Z",
            "categories": ["Christmas"],
        }
    ],
    # a purchase's own time rules its points' expiry, and December 2010's would all have expired long ago: the
    # demo's programme keeps points until they are spent
    "expires_after_days": None,
}
TIERS: list[dict[str, Any]] = [
    {"name": "Bronze", "threshold": 0, "earn_multiplier": "1"},
    {"name": "Silver", "threshold": 1000, "earn_multiplier": "1.25"},
    {"name": "Gold", "threshold": 5000, "earn_multiplier": "1.5"},
]

Say = Callable[[str], None]


@dataclass
class Options:
    url: str = DEFAULT_URL
    key: str | None = None
    limit: int | None = None
    concurrency: int = 16
    data: Path = SAMPLE
    wait_seconds: float = 600.0
    progress: bool = True


@dataclass
class Report:
    setup: dict[str, str] = field(default_factory=dict)
    purchases: Counter[str] = field(default_factory=Counter)  # customer -> purchases replayed
    accepted: int = 0
    duplicates: int = 0  # purchases an earlier run already made: answered as before, nothing earned twice
    refused: list[str] = field(default_factory=list)  # "invoice: status code detail"
    pending_after: int = 0
    failed_after: int = 0
    model: dict[str, Any] | None = None
    shown: list[str] = field(default_factory=list)
    returning: str | None = None  # the first-time buyer of the month who buys again today
    overviews: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiment: dict[str, Any] | None = None  # the report of the experiment on the Advent bonus


class DemoError(Exception):
    """Something the person running the demo can act on."""


def admin_key(explicit: str | None = None) -> str:
    key = importer.admin_key(explicit)
    if key is not None:
        return key
    raise DemoError("No admin key: pass --key, set LOYALTY_ADMIN_KEY, or start the platform with `make run` first.")


async def _all(
    client: httpx.AsyncClient, path: str, query: dict[str, str] | None = None
) -> list[dict[str, Any]] | None:
    """Every item of a paginated list; None when the platform has no such list (yet)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = (query or {}) | {"limit": 200} | ({"cursor": cursor} if cursor else {})
        response = await client.get(path, params=params)
        if response.status_code in (404, 405, 501, 503):
            return None
        _raise_for(response)
        page = response.json()
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise DemoError(f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}")


async def _find_or_create(
    client: httpx.AsyncClient,
    list_path: str,
    create_path: str,
    body: dict[str, Any],
    same: Callable[[dict[str, Any]], bool],
) -> tuple[str, dict[str, Any] | None]:
    existing = await _all(client, list_path)
    if existing is None:
        return "not available on this platform", None
    for item in existing:
        if same(item):
            return "already set up", item
    response = await client.post(create_path, json=body)
    _raise_for(response)
    return "created", response.json()


async def _put(client: httpx.AsyncClient, path: str, body: Any) -> str:
    response = await client.put(path, json=body)
    if response.status_code in (404, 405, 501, 503):
        return "not available on this platform"
    _raise_for(response)
    return "set"


async def set_up(client: httpx.AsyncClient) -> dict[str, str]:
    """The levers the replay will pull; every step is skipped when its API is not there."""
    done: dict[str, str] = {}
    done["earning rules"] = await _put(client, "/v1/points/rules", EARNING_RULES)
    experiment = {
        "name": EXPERIMENT,
        "lever": {"type": "bonus_campaign", "id": EARNING_RULES["bonus_campaigns"][0]["name"]},
        "holdout_percent": 50,
        "starts_at": "2010-12-01T00:00:00Z",
    }
    state, _ = await _find_or_create(
        client, "/v1/experiments", "/v1/experiments", experiment, lambda e: e.get("name") == EXPERIMENT
    )
    done["experiment on the Advent bonus (50% holdout)"] = state
    done["tiers"] = await _put(client, "/v1/points/tiers", TIERS)

    async def campaign(name: str, discount: dict[str, Any]) -> dict[str, Any] | None:
        # Long enough that the codes stay unguessable for thousands of customers (the coupon service checks).
        body = {"name": name, "discount": discount, "code": {"prefix": "DEMO", "length": 14}}
        state, found = await _find_or_create(
            client, "/v1/coupon-campaigns", "/v1/coupon-campaigns", body, lambda c: c.get("name") == name
        )
        done[f"campaign {name!r}"] = state
        return found

    async def rule(label: str, found: dict[str, Any] | None, trigger: dict[str, Any]) -> None:
        if found is None:
            done[label] = "skipped (no campaign)"
            return
        body = {"campaign_id": found["id"], "trigger": trigger}
        state, _ = await _find_or_create(
            client,
            "/v1/coupon-rules",
            "/v1/coupon-rules",
            body,
            lambda r: r.get("campaign_id") == found["id"] and r.get("trigger") == trigger,
        )
        done[label] = state

    thanks = await campaign(SURPRISE_CAMPAIGN, {"type": "percent", "value": "10"})
    await rule(f"surprise rule: the {SURPRISE_EVERY}nd purchase", thanks, {"type": "nth_purchase", "n": SURPRISE_EVERY})
    sorry = await campaign(APOLOGY_CAMPAIGN, {"type": "fixed_amount", "value": "5.00", "currency": "GBP"})
    await rule("apology rule: an unhappy survey answer", sorry, {"type": "survey_detractor"})

    survey = {
        "name": SURVEY,
        "questions": [
            {"id": "nps", "type": "nps", "text": "How likely are you to recommend us to a friend?", "required": True},
            {"id": "comment", "type": "text", "text": "Anything we could do better?"},
        ],
        "reward_points": 50,
        "cooldown_days": 90,
        "send_after_purchase": True,
    }
    state, _ = await _find_or_create(client, "/v1/surveys", "/v1/surveys", survey, lambda s: s.get("name") == SURVEY)
    done["post-purchase survey"] = state
    return done


BATCH_LINES = 1_000


async def replay(client: httpx.AsyncClient, batch: Iterable[Invoice], report: Report, progress: bool) -> None:
    """The invoices through `POST /v1/purchases:batch`, BATCH_LINES a call, one call after another: each
    customer's purchases are accepted (and so delivered) in the order of the file."""
    pending = list(batch)
    queue: asyncio.Queue[list[Invoice]] = asyncio.Queue()
    for start in range(0, len(pending), BATCH_LINES):
        queue.put_nowait(pending[start : start + BATCH_LINES])
    bar = tqdm(total=len(pending), unit="purchase", desc="Importing", disable=not progress, dynamic_ncols=True)

    async def worker() -> None:
        while not queue.empty():
            chunk = queue.get_nowait()
            lines = b"\n".join(orjson.dumps(purchase_payload(invoice)) for invoice in chunk)
            response = await _post_batch(client, lines)
            if response.status_code != 200:
                report.refused += [f"{i.invoice}: {response.status_code} {response.text[:200]}" for i in chunk]
            else:
                answer = response.json()
                refused = {r["line"]: r for r in answer["rejected"]}
                report.accepted += answer["accepted"]
                report.duplicates += answer["duplicates"]
                for number, invoice in enumerate(chunk, 1):
                    if number in refused:
                        report.refused.append(f"{invoice.invoice}: {refused[number]['errors']}")
                    else:
                        report.purchases[invoice.customer_id] += 1
            bar.update(len(chunk))

    try:
        await worker()
    finally:
        bar.close()


async def _post_batch(client: httpx.AsyncClient, lines: bytes) -> httpx.Response:
    """Purchases are idempotent by their id, so anything transient is safe to retry: the network, a rate limit,
    a server error (a busy database), an unavailable gateway."""
    for attempt in range(5):
        try:
            response = await client.post(
                "/v1/purchases:batch", content=lines, headers={"Content-Type": "application/x-ndjson"}, timeout=300
            )
        except httpx.TransportError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.5 * 2**attempt)
            continue
        if not (response.status_code == 429 or response.status_code >= 500) or attempt == 4:
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", 0.5 * 2**attempt)))
    raise AssertionError("unreachable")


async def _count(client: httpx.AsyncClient, status: str) -> int | None:
    items = await _all(client, "/v1/admin/deliveries", {"status": status})
    return None if items is None else len(items)


async def wait_for_deliveries(client: httpx.AsyncClient, timeout: float, progress: bool, say: Say) -> tuple[int, int]:
    """Until the gateway has no delivery pending; answers (pending, failed) at the end."""
    pending = await _count(client, "pending")
    if pending is None:
        say("  (this gateway does not list its deliveries; not waiting)")
        return 0, 0
    bar = tqdm(total=pending, unit="delivery", desc="Delivering", disable=not progress, dynamic_ncols=True)
    deadline = time.monotonic() + timeout
    try:
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            pending = await _count(client, "pending") or 0
            bar.total = max(bar.total or 0, pending)
            bar.n = (bar.total or 0) - pending
            bar.refresh()
    finally:
        bar.close()
    return pending or 0, await _count(client, "failed") or 0


async def retrain(client: httpx.AsyncClient, timeout: float) -> dict[str, Any] | None:
    before = await client.get("/v1/recommend/model")
    if before.status_code in (404, 405, 501, 503):
        return None
    _raise_for(before)
    response = await client.post("/v1/recommend/model/retrain")
    if response.status_code not in (202, 409):  # 409: a training is already running, which will do
        _raise_for(response)
    wanted = response.json().get("version") if response.status_code == 202 else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = await client.get("/v1/recommend/model")
        _raise_for(model)
        info: dict[str, Any] = model.json()
        if not info.get("training") and (wanted is None or info.get("version", 0) >= wanted):
            return info
        await asyncio.sleep(0.5)
    return None


async def buy_again_today(client: httpx.AsyncClient, customer: str) -> str:
    """A purchase of now, so it may surprise (a purchase's own time decides); sent once, whatever the reruns."""
    purchase_id = f"demo-today-{customer}"
    if (await client.get(f"/v1/purchases/{purchase_id}")).status_code == 200:
        return f"purchase {purchase_id} was made on an earlier run"
    body = {
        "purchase_id": purchase_id,
        "customer_id": customer,
        "email": f"customer-{customer}@example.com",
        "occurred_at": datetime.now(UTC).isoformat(),
        "currency": "GBP",
        "total": "24.90",
        "items": [
            {
                "product_id": "22423",
                "name": "REGENCY CAKESTAND 3 TIER",
                "category": "Kitchen",
                "unit_price": "12.45",
                "quantity": 2,
            }
        ],
    }
    _raise_for(await client.post("/v1/purchases", json=body))
    return f"purchase {purchase_id} accepted: the surprise rule thanks them with a coupon"


async def overview(client: httpx.AsyncClient, customer: str, attempts: int = 3) -> dict[str, Any]:
    """The overview answers at once with what arrived within its time budget; a part that was late is asked
    again a moment later, as an app would on its next refresh."""
    for attempt in range(attempts):
        response = await client.get(f"/v1/customers/{customer}/overview")
        _raise_for(response)
        body: dict[str, Any] = response.json()
        if not body.get("unavailable") or attempt == attempts - 1:
            return body
        await asyncio.sleep(1)
    raise AssertionError("unreachable")


def pick_customers(purchases: Counter[str]) -> list[str]:
    """A regular (the most purchases), a third-time buyer, a first-time buyer (who comes back today)."""
    ranked = sorted(purchases.items(), key=lambda item: (-item[1], item[0]))
    chosen: list[str] = []
    for wanted in (None, 3, 1):
        for customer, count in ranked:
            if (wanted is None or count == wanted) and customer not in chosen:
                chosen.append(customer)
                break
    for customer, _ in ranked:  # a small slice may lack one of the shapes: fill up with the next customers
        if len(chosen) >= 3:
            break
        if customer not in chosen:
            chosen.append(customer)
    return chosen


def format_overview(overview: dict[str, Any], purchases: int) -> str:
    customer = overview["customer_id"]
    lines = [f"Customer {customer}: {purchases} purchase{'s' if purchases != 1 else ''} in December 2010"]
    points = overview.get("points")
    if points is None:
        lines.append("  Points        (unavailable)")
    else:
        expiry = points.get("next_expiry") or {}
        expiring = f", {expiry.get('points')} expire on {str(expiry.get('expires_at'))[:10]}" if expiry else ""
        lines.append(f"  Points        {points['balance']:,} (tier {points.get('tier') or '-'}{expiring})")
    coupons = overview.get("coupons")
    if coupons is None:
        lines.append("  Coupons       (unavailable)")
    elif not coupons:
        lines.append("  Coupons       none yet")
    else:
        for i, coupon in enumerate(coupons):
            discount = coupon.get("discount") or {}
            off = (
                f"{discount.get('value')}% off"
                if discount.get("type") == "percent"
                else f"{discount.get('value')} {discount.get('currency') or ''} off".strip()
            )
            label = "  Coupons       " if i == 0 else "                "
            lines.append(f"{label}{coupon.get('code')}  {off}  ({coupon.get('campaign_name', '')})")
    recommendations = overview.get("recommendations")
    if recommendations is None:
        lines.append("  For you       (unavailable)")
    else:
        for i, item in enumerate(recommendations[:5]):
            label = "  For you       " if i == 0 else "                "
            reason = f" - {item['reason']}" if item.get("reason") else ""
            lines.append(f"{label}{i + 1}. {item.get('name')} [{item.get('category')}]{reason}")
    surveys = overview.get("surveys")
    if surveys is None:
        lines.append("  Surveys       (unavailable)")
    else:
        pending = surveys.get("pending") or []
        lines.append(
            f"  Surveys       {len(pending)} waiting for an answer" if pending else "  Surveys       none waiting"
        )
    if overview.get("unavailable"):
        lines.append(f"  Unavailable   {', '.join(overview['unavailable'])}")
    return "\n".join(lines)


async def run_demo(options: Options, say: Say = print) -> Report:
    key = admin_key(options.key)
    report = Report()
    batch = list(itertools.islice(invoices(options.data), options.limit))
    limits = httpx.Limits(max_connections=options.concurrency + 4)
    async with httpx.AsyncClient(
        base_url=options.url, headers={"Authorization": f"Bearer {key}"}, timeout=30, limits=limits
    ) as client:
        try:
            (await client.get("/healthz")).raise_for_status()
        except httpx.HTTPError as exc:
            raise DemoError(f"No platform answers at {options.url} ({exc}); start it with `make run`.") from exc
        probe = await client.get("/v1/purchases/uci-probe")
        if probe.status_code in (401, 403):
            raise DemoError(f"The gateway refused the admin key ({probe.status_code}); check --key.")

        say(f"Reciprocity demo against {options.url}\n\n1. Setting up the levers")
        report.setup = await set_up(client)
        for lever, state in report.setup.items():
            say(f"   {lever:48} {state}")

        customers = len({i.customer_id for i in batch})
        say(f"\n2. Importing {len(batch)} invoices of {customers} customers ({options.data.name})")
        await replay(client, batch, report, options.progress)
        say(f"   {report.accepted} accepted, {report.duplicates} already there, {len(report.refused)} refused")
        for line in report.refused[:5]:
            say(f"   refused {line}")

        say("\n3. Waiting for points, coupons, recommendations and surveys to receive them")
        report.pending_after, report.failed_after = await wait_for_deliveries(
            client, options.wait_seconds, options.progress, say
        )
        say(f"   {report.pending_after} still pending, {report.failed_after} parked as failed")

        say("\n4. Retraining the recommender")
        report.model = await retrain(client, options.wait_seconds)
        if report.model is None:
            say("   (not available, or still training)")
        else:
            model = report.model
            say(
                f"   model v{model.get('version')}: {model.get('customers')} customers, {model.get('products')} "
                f"products, {model.get('interactions')} interactions"
            )

        report.shown = pick_customers(report.purchases)
        if len(report.shown) == 3 and report.purchases[report.shown[2]] == 1:
            report.returning = report.shown[2]
            say(
                "\n5. Today: the month was history, so it earned points and taught the recommender but woke no one"
                f" (no surprise, no survey). Customer {report.returning} comes back today for a 2nd purchase."
            )
            say(f"   {await buy_again_today(client, report.returning)}")
            await wait_for_deliveries(client, options.wait_seconds, False, say)
        say("\n6. What three customers see (GET /v1/customers/{id}/overview)\n")
        for customer in report.shown:
            report.overviews[customer] = await overview(client, customer)
            say(format_overview(report.overviews[customer], report.purchases[customer]) + "\n")
    if report.shown:
        say(
            "Next: the same view as JSON, for any customer of the sample:\n"
            f"  curl -H 'Authorization: Bearer <admin key>' {options.url}/v1/customers/{report.shown[0]}/overview\n"
            f"The whole API: {options.url}/docs. Survey invitations go out POST_PURCHASE_SURVEY_DELAY_SECONDS after a"
            " purchase (a day unless set).\n"
        )
    report.experiment = await show_experiment(options, key, say)
    say("Run it again: every purchase is answered as before and nothing is earned twice.")
    return report


async def show_experiment(options: Options, key: str, say: Say) -> dict[str, Any] | None:
    """The last word: did the Advent bonus bring customers back? On a replay it cannot have."""
    async with httpx.AsyncClient(base_url=options.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        found = [e for e in await _all(c, "/v1/experiments") or [] if e.get("name") == EXPERIMENT]
        if not found:
            return None
        path = f"/v1/experiments/{found[0]['id']}/results"
        # the services report exposures through their outboxes, a moment after the purchases: wait until the
        # count stops moving
        exposed, deadline = -1, time.monotonic() + min(60.0, options.wait_seconds)
        while True:
            response = await c.get(path, params={"window_days": 14})
            if response.status_code != 200:
                break
            now = sum(a["customers_exposed"] for a in response.json()["arms"].values())
            if (now == exposed and now > 0) or time.monotonic() > deadline:
                break
            exposed = now
            await asyncio.sleep(1.0)
    if response.status_code != 200:
        say(f"7. The experiment's report is not available ({response.status_code}).\n")
        return None
    result = response.json()
    say("7. Did the Advent bonus bring customers back? (GET /v1/experiments/{id}/results?window_days=14)\n")
    say(f"   {'':10} {'exposed':>8} {'returned':>9} {'repeat rate':>12} {'revenue/customer':>17} {'bonus points':>13}")
    for arm in ("treatment", "holdout"):
        a = result["arms"][arm]
        say(
            f"   {arm:10} {a['customers_exposed']:>8} {a['customers_returned']:>9} {a['repeat_rate']:>12.1%}"
            f" {a['revenue_per_customer']:>17} {a['reward_cost_points']:>13}"
        )
    lift = result["lift"]["repeat_rate"]
    if lift:
        low, high = lift["ci95"]
        say(
            f"   lift in repeat rate {lift['absolute']:+.1%} (95% interval {low:+.1%} to {high:+.1%}, "
            f"p = {lift['p_value']:.2f})"
        )
    say(f"   {result['conclusion']}")
    say(
        "   There is no significant lift, and there cannot be: these customers shopped in 2010, long before any\n"
        "   reward was given, so a replay is an A/A test. On live traffic the same report measures what the bonus\n"
        "   causes (docs/experiments.md).\n"
    )
    return result  # type: ignore[no-any-return]


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("RECIPROCITY_URL", DEFAULT_URL), help="the gateway")
    parser.add_argument("--key", help="the admin key (default: LOYALTY_ADMIN_KEY or .data/secrets.env)")
    parser.add_argument("--limit", type=int, help="replay only the first N invoices")
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP connections (overviews, polling)")
    parser.add_argument("--data", type=Path, default=SAMPLE, help="an Online Retail CSV (gzipped)")
    parser.add_argument("--wait", type=float, default=600.0, help="seconds to wait for deliveries and training")
    args = parser.parse_args(argv)
    return Options(
        url=args.url.rstrip("/"),
        key=args.key,
        limit=args.limit,
        concurrency=args.concurrency,
        data=args.data,
        wait_seconds=args.wait,
        progress=sys.stderr.isatty(),
    )


def main(argv: list[str] | None = None) -> int:
    try:
        asyncio.run(run_demo(parse_args(argv)))
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
