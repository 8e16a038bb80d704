"""A partner generates a client from the gateway's /openapi.json with openapi-python-client and uses it.

The code that uses it is tests/contract/client_example.py, which docs/client.md shows verbatim."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import uuid4

import pytest

from tests.conftest import ADMIN_KEY, Platform

HERE = Path(__file__).parent
EXAMPLE = HERE / "client_example.py"
CONFIG = HERE / "client_config.yaml"
GUIDE = HERE.parents[1] / "docs" / "client.md"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


def test_the_guide_shows_the_example_that_is_run() -> None:
    guide = GUIDE.read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in guide
    assert f"```yaml\n{CONFIG.read_text()}```" in guide


@pytest.fixture(scope="module")
def generated_client(merged_openapi: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    folder = tmp_path_factory.mktemp("generated")
    document = folder / "openapi.json"
    document.write_text(json.dumps(merged_openapi))
    command = [str(GENERATOR), "generate", "--path", str(document), "--output-path", str(folder / "reciprocity_client")]
    command += ["--config", str(CONFIG), "--meta", "none", "--overwrite", "--fail-on-warning"]
    # The generator formats its output with ruff when it finds it on PATH.
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout, result.stdout
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("client_example", EXAMPLE)
        assert spec is not None and spec.loader is not None
        example = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(example)
        yield example
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == "reciprocity_client" or n.startswith("reciprocity_client.")]:
            del sys.modules[name]


async def test_a_generated_client_records_a_purchase_and_reads_the_overview(
    platform: Platform, generated_client: ModuleType
) -> None:
    models = importlib.import_module("reciprocity_client.models")
    purchase_id, customer_id = f"gen-{uuid4().hex[:12]}", f"gen-{uuid4().hex[:10]}"
    occurred_at = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)

    served = {name for name in platform.servers if name != "gateway"}
    accepted, purchase, overview = await generated_client.purchase_then_overview(
        platform.gateway_url, ADMIN_KEY, purchase_id, customer_id, occurred_at, served
    )

    assert isinstance(accepted, models.PurchaseAccepted)
    assert (accepted.purchase_id, accepted.status) == (purchase_id, "accepted")
    assert isinstance(purchase, models.Purchase)
    assert purchase.customer_id == customer_id and purchase.total == "25.50"
    assert set(purchase.deliveries.additional_properties) == {"points", "coupon", "recommend", "survey"}
    assert isinstance(overview, models.CustomerOverview)
    assert overview.customer_id == customer_id
    get_overview = importlib.import_module("reciprocity_client.api.customers.get_customer_overview")
    client_module = importlib.import_module("reciprocity_client")
    async with client_module.AuthenticatedClient(base_url=platform.gateway_url, token=ADMIN_KEY) as client:
        for _ in range(5):  # a part late for its time budget (a busy machine) is asked again
            if set(overview.unavailable) == {"points", "coupon", "recommend", "survey"} - served:
                break
            await asyncio.sleep(1)
            overview = await get_overview.asyncio(client=client, customer_id=customer_id)
    assert set(overview.unavailable) == {"points", "coupon", "recommend", "survey"} - served
    if "points" in served:
        assert isinstance(overview.points, models.PointsSummary)
        async with platform.client() as admin:
            balance = (await admin.get(f"/v1/customers/{customer_id}/points")).json()["balance"]
        assert overview.points.balance == balance > 0

    # Sent again, the same purchase is answered the same and changes nothing.
    again, _, overview_again = await generated_client.purchase_then_overview(
        platform.gateway_url, ADMIN_KEY, purchase_id, customer_id, occurred_at, served
    )
    assert again == accepted
    if "points" in served:
        assert overview_again.points.balance == overview.points.balance
    # Another body under the same purchase_id is refused, as a typed problem.
    with pytest.raises(RuntimeError, match="409 purchase_conflict"):
        await generated_client.purchase_then_overview(platform.gateway_url, ADMIN_KEY, purchase_id, customer_id)


async def test_a_generated_client_gets_typed_problems(platform: Platform, generated_client: ModuleType) -> None:
    client_module = importlib.import_module("reciprocity_client")
    purchases = importlib.import_module("reciprocity_client.api.purchases.get_purchase")
    models = importlib.import_module("reciprocity_client.models")
    async with client_module.AuthenticatedClient(base_url=platform.gateway_url, token="not-a-key") as client:
        unauthorized = await purchases.asyncio(client=client, purchase_id="p-1")
    async with client_module.AuthenticatedClient(base_url=platform.gateway_url, token=ADMIN_KEY) as client:
        missing = await purchases.asyncio(client=client, purchase_id=f"missing-{uuid4().hex[:8]}")
    assert isinstance(unauthorized, models.Problem) and unauthorized.status == 401
    assert isinstance(missing, models.Problem) and (missing.status, missing.code) == (404, "not_found")


async def test_a_generated_client_uploads_interactions_as_csv(platform: Platform, generated_client: ModuleType) -> None:
    if "recommend" not in platform.servers:
        pytest.skip("recommend is not served (RECIPROCITY_TEST_SERVICES)")
    client_module = importlib.import_module("reciprocity_client")
    import_interactions = importlib.import_module("reciprocity_client.api.recommend.import_interactions")
    models = importlib.import_module("reciprocity_client.models")
    types = importlib.import_module("reciprocity_client.types")
    customer_id, product_id = f"gen-{uuid4().hex[:10]}", f"gen-{uuid4().hex[:10]}"
    product = {"product_id": product_id, "name": "Jumbo bag red retrospot", "category": "Bags"}
    product |= {"price": "2.10", "currency": "GBP", "active": True}
    async with platform.client() as admin:
        assert (await admin.put("/v1/products", json={"items": [product]})).status_code == 200
    csv = f"customer_id,product_id,quantity,occurred_at\n{customer_id},{product_id},2,2026-11-20T15:30:00Z\n"
    async with client_module.AuthenticatedClient(base_url=platform.gateway_url, token=ADMIN_KEY) as client:
        result = await import_interactions.asyncio(
            client=client, body=types.File(payload=csv.encode(), mime_type="text/csv")
        )
    assert isinstance(result, models.ImportResult)
    assert (result.imported, result.rejected) == (1, 0)
