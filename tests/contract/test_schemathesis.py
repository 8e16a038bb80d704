"""Schemathesis against the gateway's merged OpenAPI: generated requests for every operation, with the admin key.

Checks on every response: no 5xx; the status code is one the operation documents; the content type and the body
match what is documented for that status; documented headers conform.

It runs on a platform of its own (tests/contract/conftest.py `isolated_platform`): the generated requests replace
earning rules and tiers, create surprise rules and products, and the rest of the session must not see them.

Each operation is tried with generated path parameters (mostly unknown ids: the 404 and 422 paths) and again with
the ids of resources created first (a campaign, a survey, a customer with points, a purchase: the success paths),
in positive (valid input) and negative (invalid input) modes, with a fixed seed and a bounded number of examples.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

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
from tests.contract.conftest import isolated_platform

# Schemathesis's own strategies trip a Hypothesis deprecation warning; nothing this suite can act on.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

MAX_EXAMPLES = 6
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


async def seed_resources(client: Any) -> dict[str, str]:
    """Resources the success paths need, returned by the path parameter names that address them."""
    known: dict[str, str] = {}
    customer_id = f"st-{uuid4().hex[:10]}"
    known["customer_id"] = customer_id
    purchase = {
        "purchase_id": f"st-{uuid4().hex[:12]}",
        "customer_id": customer_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "currency": "GBP",
        "total": "30.00",
        "items": [
            {"product_id": "22423", "name": "Cakestand", "category": "Kitchen", "unit_price": "30.00", "quantity": 1}
        ],
    }
    if (await client.post("/v1/purchases", json=purchase)).status_code == 202:
        known["purchase_id"] = purchase["purchase_id"]
    earned = await client.post(
        f"/v1/customers/{customer_id}/points/earn", json={"points": 500, "reference": f"st-{uuid4().hex[:8]}"}
    )
    del earned
    campaign = await client.post(
        "/v1/coupon-campaigns",
        json={"name": "schemathesis", "discount": {"type": "percent", "value": "10"}, "code": {"length": 12}},
    )
    if campaign.status_code == 201:
        known["campaign_id"] = campaign.json()["id"]
    survey = await client.post(
        "/v1/surveys",
        json={
            "name": "schemathesis",
            "questions": [{"id": "nps", "type": "nps", "text": "Would you recommend us?", "required": True}],
        },
    )
    if survey.status_code == 201:
        known["survey_id"] = survey.json()["id"]
    products = await client.put(
        "/v1/products",
        json={
            "items": [
                {
                    "product_id": "22423",
                    "name": "Cakestand",
                    "category": "Kitchen",
                    "price": "30.00",
                    "currency": "GBP",
                    "active": True,
                }
            ]
        },
    )
    if products.status_code == 200:
        known["product_id"] = "22423"
    return known


@dataclass
class Run:
    findings: dict[str, list[Finding]]  # operationId -> what failed
    statuses: dict[str, Counter[int]]  # operationId -> the statuses answered


@pytest.fixture(scope="module")
async def st_platform(platform_env: dict[str, str]) -> AsyncIterator[Platform]:
    async with isolated_platform(platform_env) as platform:
        yield platform


@pytest.fixture(scope="module")
async def run(st_platform: Platform, artifacts: Path) -> Run:
    return await run_schemathesis(st_platform, artifacts)


async def run_schemathesis(platform: Platform, artifacts: Path) -> Run:
    async with platform.client() as client:
        document = (await client.get("/openapi.json")).json()
        known = await seed_resources(client)
    schema = schemathesis.openapi.from_dict(capped_copy(document))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    result = Run(findings={}, statuses={})
    for loaded in schema.get_all_operations():
        operation = loaded.ok()
        operation_id = operation.definition.raw["operationId"]
        findings = result.findings[operation_id] = []
        statuses = result.statuses[operation_id] = Counter()
        if operation_id in EXCLUDED:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for ids in (None, known):
                findings += await asyncio.to_thread(fuzz, operation, platform.gateway_url, headers, mode, ids, statuses)
    report = {
        op: {"statuses": dict(sorted(result.statuses[op].items())), "findings": [str(f) for f in found]}
        for op, found in result.findings.items()
    }
    (artifacts / "schemathesis.json").write_text(json.dumps(report, indent=2))
    return result


def test_every_operation_passes_the_checks(run: Run) -> None:
    failing = [str(f) for op, found in sorted(run.findings.items()) if op not in KNOWN_DEFECTS for f in found]
    assert failing == [], "\n\n".join(failing)


def test_every_operation_was_tried_and_the_success_paths_were_reached(run: Run) -> None:
    """Without this, a run whose requests all bounced (404, 422) would pass while checking little."""
    untried = sorted(op for op, statuses in run.statuses.items() if op not in EXCLUDED and not statuses)
    assert untried == []
    succeeded = {op for op, statuses in run.statuses.items() if any(200 <= s < 300 for s in statuses)}
    reachable = {"get_purchase", "get_customer_overview", "get_points_balance", "earn_points", "list_api_keys"}
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
