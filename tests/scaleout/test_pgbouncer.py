"""The platform behind a real PgBouncer in transaction mode (DATABASE_URL) with DATABASE_DIRECT_URL for the
migrations, each process logging in as its own role as deploy/ sets them up: the core paths work while three
server connections per role serve each process's pool, so a statement prepared by name, or any setting left
on a connection, would meet the wrong client."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import uuid4

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_KEY, INTERNAL_TOKEN, SERVICES
from tests.coupon.helpers import create_campaign, generate, issue, order
from tests.loop.helpers import purchase_body, wait_for_deliveries
from tests.support.database import create_database, drop_database, server_url
from tests.support.pgbouncer import PgBouncer
from tests.support.servers import InProcessServer, free_port

pytestmark = pytest.mark.slow


def settings_for(name: str, env: dict[str, str]) -> object:
    module = importlib.import_module(f"{name}.settings")
    cls = next(v for k, v in vars(module).items() if k.endswith("Settings") and k != "ServiceSettings")
    return cls(**env)


@dataclass
class Pooled:
    gateway: str
    urls: dict[str, str]
    bouncer: PgBouncer
    database: str


@pytest.fixture(scope="module")
async def pooled(platform_env: dict[str, str]) -> AsyncIterator[Pooled]:
    base = await asyncio.to_thread(server_url)
    direct, name = await create_database(base)
    roles = {service: f"reciprocity_{service}" for service in (*SERVICES, "gateway")}
    connection = await asyncpg.connect(base)
    try:  # roles are the server's, shared by the test databases on it: only ever allowed to log in here
        for role in roles.values():
            exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            await connection.execute(f'{"ALTER" if exists else "CREATE"} ROLE "{role}" LOGIN')
    finally:
        await connection.close()
    # three server connections for each process's pool (and recommend's serving pool)
    bouncer = PgBouncer(base, list(roles.values()), pool_size=3).start()
    ports = {n: free_port() for n in (*SERVICES, "gateway")}
    env = {
        **{k: v for k, v in platform_env.items() if not k.endswith(("_PORT", "_URL"))},
        "DATABASE_DIRECT_URL": direct,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['gateway']}",
        "SMTP_HOST": platform_env["SMTP_HOST"],
        "SMTP_PORT": platform_env["SMTP_PORT"],
        "RECOMMEND_TRAIN_IN_SUBPROCESS": "false",
        **{f"{n.upper()}_PORT": str(p) for n, p in ports.items()},
        **{f"{n.upper()}_URL": f"http://127.0.0.1:{ports[n]}" for n in (*SERVICES, "gateway")},
    }
    servers: list[InProcessServer] = []
    try:
        for service in (*SERVICES, "gateway"):
            own = {**env, "DATABASE_URL": bouncer.url(name, roles[service])}
            app = importlib.import_module(f"{service}.app").create_app(settings_for(service, own))
            servers.append(await InProcessServer(app, port=ports[service]).start())
        yield Pooled(
            f"http://127.0.0.1:{ports['gateway']}",
            {n: f"http://127.0.0.1:{p}" for n, p in ports.items()},
            bouncer,
            name,
        )
    finally:
        await asyncio.gather(*(s.stop() for s in reversed(servers)), return_exceptions=True)
        bouncer.stop()
        await drop_database(base, name)


async def test_the_core_paths_work_through_pgbouncer_in_transaction_mode(pooled: Pooled) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=pooled.gateway, headers=headers, timeout=60) as admin:
        assert (await admin.get("/readyz")).status_code == 200

        key = await admin.post("/v1/api-keys", json={"name": "pooled", "scopes": ["purchases:write", "points:read"]})
        assert key.status_code == 201, key.text
        async with httpx.AsyncClient(base_url=pooled.gateway, timeout=60) as partner:
            partner.headers["Authorization"] = f"Bearer {key.json()['key']}"
            # many requests at once over three server connections: every pool's connections take turns on them
            purchases = [purchase_body(total="50.00") for _ in range(12)]
            answers = await asyncio.gather(*(partner.post("/v1/purchases", json=p) for p in purchases))
            assert [a.status_code for a in answers] == [202] * 12, [a.text for a in answers]
        for purchase in purchases:
            deliveries = await wait_for_deliveries(admin, purchase["purchase_id"], timeout=60)
            assert set(deliveries.values()) == {"delivered"}

        customer = purchases[0]["customer_id"]
        balance = (await admin.get(f"/v1/customers/{customer}/points")).json()
        assert balance["balance"] > 0
        redeemed = await admin.post(
            f"/v1/customers/{customer}/points/redemptions", json={"points": 1, "reference": f"r-{uuid4().hex}"}
        )
        assert redeemed.status_code == 201, redeemed.text
        assert (await admin.get(f"/v1/customers/{customer}/points")).json()["balance"] == balance["balance"] - 1

        recommendations = await admin.get(f"/v1/customers/{customer}/recommendations")
        assert recommendations.status_code == 200, recommendations.text

        # a retrain request recorded (and NOTIFY sent) through the pooler; the trainer listens straight to the
        # database, trains, and the model is served
        retrain = await admin.post("/v1/recommend/model/retrain")
        assert retrain.status_code == 202, retrain.text
        for _ in range(600):
            model = (await admin.get("/v1/recommend/model")).json()
            if model["version"] >= retrain.json()["version"] and not model["training"]:
                break
            await asyncio.sleep(0.1)
        assert model["version"] >= retrain.json()["version"] and model["interactions"] > 0, model

    # coupon's hot paths run on the raw driver connection (COPY for codes, prepared redemption statements)
    async with httpx.AsyncClient(
        base_url=pooled.urls["coupon"], headers={"X-Internal-Token": INTERNAL_TOKEN}, timeout=60
    ) as coupon:
        campaign = await create_campaign(coupon)
        codes = await generate(coupon, campaign["id"], 50)
        assert len(codes) == 50
        code = await issue(coupon, campaign["id"], "c-pooled")
        loose = [c for c in codes if c != code][:10]
        results = await asyncio.gather(
            *(coupon.post(f"/v1/coupons/{c}/redemptions", json=order(f"c-{uuid4().hex[:8]}")) for c in loose)
        )
        assert [r.status_code for r in results] == [201] * 10, [r.text for r in results]
        assert (await coupon.post(f"/v1/coupons/{code}/redemptions", json=order("c-pooled"))).status_code == 201

    # each process logged in through the pooler as its own role
    log = pooled.bouncer.log()
    for service in (*SERVICES, "gateway"):
        assert f"login attempt: db={pooled.database} user=reciprocity_{service}" in log


async def test_without_the_pooler_the_processes_are_not_ready_and_say_why(pooled: Pooled) -> None:
    """Proof that the traffic above went through PgBouncer: with it stopped, nothing reaches the database."""
    pooled.bouncer.process.terminate()  # type: ignore[union-attr]
    pooled.bouncer.process.wait(timeout=10)  # type: ignore[union-attr]
    async with httpx.AsyncClient(timeout=30) as client:
        ready = await client.get(pooled.urls["points"] + "/readyz")
    assert ready.status_code == 503
    assert "database" in ready.json()["checks"]
