"""Schemathesis against the gateway's merged OpenAPI: generated requests for every operation, with the admin key.

Checks on every response: no 5xx; the status code is one the operation documents; the content type and the body
match what is documented for that status; documented headers conform.

It runs on a platform of its own (tests/support/platforms.py `own_platform`): the generated requests replace
earning rules and tiers, create surprise rules and products, and the rest of the session must not see them.

Each operation is tried with generated path parameters (mostly unknown ids: the 404 and 422 paths) and again with
the ids of resources created first (`seed_resources`: a customer with points, a purchase, a product, an API key, a
campaign with a rule, a code job, an issued and a redeemed coupon, a survey with an invitation and its token from
the mail: the success paths), in positive (valid input) and negative (invalid input) modes, with a fixed seed and
a bounded number of examples. The statuses answered per operation and any findings are written to
test-artifacts/schemathesis.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from tests.conftest import ADMIN_KEY, Platform
from tests.support.mail import Mailbox
from tests.support.platforms import own_platform

# Schemathesis's own strategies trip a Hypothesis deprecation warning; nothing this suite can act on.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

MAX_EXAMPLES = 5
SEED = 20261124
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Operations whose generated requests could not run safely, with the reason; capped rather than excluded
# where a cap in the tested copy of the document keeps the operation covered.
CAPS = {
    # Up to 1,000,000 codes per call: generated counts are capped at 1,000 to keep the run bounded.
    ("CodesRequest", "count"): 1000,
}
EXCLUDED: dict[str, str] = {}
# Known defects still failing: "operationId" -> the reason (shown as an expected failure until fixed).
KNOWN_DEFECTS: dict[str, str] = {}


@dataclass(frozen=True)
class Finding:
    operation: str
    check: str
    message: str
    request: str
    status: int
    response: str

    def __str__(self) -> str:
        return f"{self.operation} [{self.check}] {self.message}\n  {self.request}\n  -> {self.status} {self.response}"


def capped_copy(document: dict[str, Any]) -> dict[str, Any]:
    tested = copy.deepcopy(document)
    schemas = tested["components"]["schemas"]
    for (schema, field), maximum in CAPS.items():
        if schema in schemas:
            schemas[schema]["properties"][field]["maximum"] = maximum
    return tested


def fuzz(
    operation: Any,
    base_url: str,
    headers: dict[str, str],
    mode: GenerationMode,
    known: dict[str, str] | None,
    statuses: Counter[int],
) -> list[Finding]:
    """Runs in a worker thread: the servers under test share the test's event loop."""
    findings: dict[tuple[str, str], Finding] = {}
    session = requests.Session()
    path_parameters = None
    if known is not None:
        names = {p.name for p in operation.iter_parameters() if p.location == "path"}
        path_parameters = {k: v for k, v in known.items() if k in names}
        if not path_parameters or set(path_parameters) != names:
            return []
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @hypothesis.seed(SEED)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                check = type(failure).__name__
                key = (operation.label, check)
                if key in findings:
                    continue
                body = case.body if not isinstance(case.body, bytes | bytearray) else "<bytes>"
                request = (
                    f"{case.method} {case.formatted_path} query={case.query} body={json.dumps(body, default=str)[:400]}"
                )
                findings[key] = Finding(
                    operation=operation.definition.raw.get("operationId", operation.label),
                    check=str(getattr(failure, "title", check)),
                    message=str(getattr(failure, "message", failure))[:600],
                    request=request,
                    status=response.status_code,
                    response=response.text[:400],
                )

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # Negative mode on an operation without input: there is nothing to make invalid.
        if mode is not GenerationMode.NEGATIVE:
            raise
    return list(findings.values())


async def seed_resources(client: httpx.AsyncClient, mailbox: Mailbox) -> dict[str, str]:
    """Resources the success paths need, by the path parameter names that address them (best effort: a step whose
    API refuses leaves its name out, and those operations are tried with generated ids only)."""
    known: dict[str, str] = {}

    async def create(name: str, field: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await client.request(method, path, json=body)
        if response.status_code in (200, 201, 202):
            known[name] = str(response.json()[field])
            return dict(response.json())
        return {}

    customer_id = known["customer_id"] = f"st-{uuid4().hex[:10]}"
    email = f"{customer_id}@example.com"
    item = {"product_id": "22423", "name": "Cakestand", "category": "Kitchen"}
    await client.put("/v1/products", json={"items": [item | {"price": "30.00", "currency": "GBP", "active": True}]})
    known["product_id"] = "22423"
    purchase = {
        "purchase_id": f"st-{uuid4().hex[:12]}",
        "customer_id": customer_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "currency": "GBP",
        "total": "30.00",
        "items": [item | {"unit_price": "30.00", "quantity": 1}],
    }
    await create("purchase_id", "purchase_id", "POST", "/v1/purchases", purchase)
    await client.post(f"/v1/customers/{customer_id}/points/earn", json={"points": 500, "reference": "st-seed"})
    await create("key_id", "id", "POST", "/v1/api-keys", {"name": "schemathesis", "scopes": ["points:read"]})
    campaign = await create(
        "campaign_id",
        "id",
        "POST",
        "/v1/coupon-campaigns",
        {"name": "schemathesis", "discount": {"type": "percent", "value": "10"}, "code": {"length": 16}},
    )
    if campaign:
        campaign_path = f"/v1/coupon-campaigns/{campaign['id']}"
        rule = {"campaign_id": campaign["id"], "trigger": {"type": "nth_purchase", "n": 1000}}
        await create("rule_id", "id", "POST", "/v1/coupon-rules", rule)
        await create("job_id", "id", "POST", f"{campaign_path}/codes", {"count": 10})
        await create("code", "code", "POST", f"{campaign_path}/issuances", {"customer_id": customer_id})
        spent = await client.post(f"{campaign_path}/issuances", json={"customer_id": f"{customer_id}-2"})
        if spent.status_code == 201:
            order = {
                "customer_id": f"{customer_id}-2",
                "order_id": "st-order",
                "order_total": "50.00",
                "currency": "GBP",
            }
            await create(
                "redemption_id", "redemption_id", "POST", f"/v1/coupons/{spent.json()['code']}/redemptions", order
            )
    survey = await create(
        "survey_id",
        "id",
        "POST",
        "/v1/surveys",
        {
            "name": "schemathesis",
            "questions": [{"id": "nps", "type": "nps", "text": "Recommend us?", "required": True}],
        },
    )
    if survey:
        invitation = {"customer_id": customer_id, "email": email}
        await create("invitation_id", "invitation_id", "POST", f"/v1/surveys/{survey['id']}/invitations", invitation)
        with contextlib.suppress(TimeoutError):
            message = (await mailbox.wait_for(email, timeout=10))[0]
            text = "".join(p.get_content() for p in message.walk() if p.get_content_maintype() == "text")
            found = re.search(r"/s/([A-Za-z0-9_-]{16,})", text)
            if found:
                known["token"] = found.group(1)
    return known


@dataclass
class Run:
    findings: dict[str, list[Finding]]  # operationId -> what failed
    statuses: dict[str, Counter[int]]  # operationId -> the statuses answered


@pytest.fixture(scope="module")
async def st_platform(platform_env: dict[str, str]) -> AsyncIterator[Platform]:
    async with own_platform(platform_env) as platform:
        yield platform


@pytest.fixture(scope="module")
async def run(st_platform: Platform, artifacts: Path, mailbox: Mailbox) -> Run:
    return await run_schemathesis(st_platform, artifacts, mailbox)


async def run_schemathesis(platform: Platform, artifacts: Path, mailbox: Mailbox) -> Run:
    async with platform.client() as client:
        document = (await client.get("/openapi.json")).json()
        known = await seed_resources(client, mailbox)
    schema = schemathesis.openapi.from_dict(capped_copy(document))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    result = Run(findings={}, statuses={})
    positive: dict[str, Counter[int]] = {}
    for loaded in schema.get_all_operations():
        operation = loaded.ok()
        operation_id = operation.definition.raw["operationId"]
        findings = result.findings[operation_id] = []
        statuses = result.statuses[operation_id] = Counter()
        valid = positive[operation_id] = Counter()
        if operation_id in EXCLUDED:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            counter = valid if mode is GenerationMode.POSITIVE else Counter()
            for ids in (None, known):
                findings += await asyncio.to_thread(fuzz, operation, platform.gateway_url, headers, mode, ids, counter)
            statuses.update(counter)
    report: dict[str, Any] = {"known ids": known}
    # Not a failure, a hint: requests valid by the document that were all refused with 422 mean the document
    # accepts more than the service does (a missing enum, pattern or bound), which a client generator cannot see.
    report["valid by the document, always 422"] = sorted(
        op for op, counter in positive.items() if counter and set(counter) <= {422, 404} and 422 in counter
    )
    report |= {
        op: {"statuses": dict(sorted(result.statuses[op].items())), "findings": [str(f) for f in found]}
        for op, found in result.findings.items()
    }
    (artifacts / "schemathesis.json").write_text(json.dumps(report, indent=2))
    return result


def test_every_operation_passes_the_checks(run: Run) -> None:
    failing = [str(f) for op, found in sorted(run.findings.items()) if op not in KNOWN_DEFECTS for f in found]
    assert failing == [], "\n\n".join(failing)


# Operations the run must get a 2xx from (by the service that answers them): without this, a run whose requests
# all bounced (404, 422) would pass while checking little.
REACHABLE = {
    "get_purchase": "gateway",
    "get_customer_overview": "gateway",
    "list_api_keys": "gateway",
    "get_points_balance": "points",
    "earn_points": "points",
    "get_coupon_rule": "coupon",
    "get_coupon_code_job": "coupon",
    "get_recommend_product": "recommend",
    "get_survey": "survey",
    "get_survey_invitation_form": "survey",
    "show_survey_page": "survey",
}


def test_every_operation_was_tried_and_the_success_paths_were_reached(run: Run, st_platform: Platform) -> None:
    untried = sorted(op for op, statuses in run.statuses.items() if op not in EXCLUDED and not statuses)
    assert untried == []
    succeeded = {op for op, statuses in run.statuses.items() if any(200 <= s < 300 for s in statuses)}
    reachable = {op for op, service in REACHABLE.items() if service in st_platform.servers}
    assert reachable - succeeded == set()


async def test_the_harness_reports_a_response_outside_the_document(st_platform: Platform) -> None:
    """The checks can fail: with 404 taken out of get_purchase's document, unknown purchase ids are reported."""
    async with st_platform.client() as client:
        document = (await client.get("/openapi.json")).json()
    del document["paths"]["/v1/purchases/{purchase_id}"]["get"]["responses"]["404"]
    operation = schemathesis.openapi.from_dict(document)["/v1/purchases/{purchase_id}"]["GET"]
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    statuses: Counter[int] = Counter()
    found = await asyncio.to_thread(
        fuzz, operation, st_platform.gateway_url, headers, GenerationMode.POSITIVE, None, statuses
    )
    assert statuses[404] > 0
    assert [(f.operation, f.status) for f in found] == [("get_purchase", 404)]
    assert "Undocumented" in found[0].check


if KNOWN_DEFECTS:

    @pytest.mark.parametrize(
        "operation_id",
        [pytest.param(op, marks=pytest.mark.xfail(strict=True, reason=why)) for op, why in KNOWN_DEFECTS.items()],
    )
    def test_known_defect(run: Run, operation_id: str) -> None:
        assert run.findings.get(operation_id) == [], "\n\n".join(str(f) for f in run.findings.get(operation_id, []))
