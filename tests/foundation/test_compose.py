"""docker-compose.yml checked against the code (no Docker engine runs here): ports, the settings each process
reads, commands, health checks and dependencies; then each process's compose command run as a local process."""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kit.settings import ServiceSettings, asyncpg_url
from tests.conftest import ARTIFACTS, Platform
from tests.support.servers import ServiceProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = {"coupon": 8001, "points": 8002, "recommend": 8003, "survey": 8004, "gateway": 8000}
# every process runs twice: `<name>` serves requests, `<name>-worker` runs the background work
ROLES = {**{name: "api" for name in PROCESSES}, **{f"{name}-worker": "worker" for name in PROCESSES}}
# the processes whose state is shared between replicas through Redis
SHARING = {"gateway", "coupon"}
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
HEALTH_URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/readyz|/healthz)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def settings_class(name: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"{name}.settings")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, ServiceSettings) and value is not ServiceSettings
    ]
    assert len(classes) == 1, f"{name}.settings should define one settings class"
    return classes[0]


def env_names(cls: type[ServiceSettings]) -> tuple[set[str], set[str]]:
    """(every variable the process reads, the ones it cannot start without)."""
    names, required = set(), set()
    for field_name, field in cls.model_fields.items():
        alias = str(field.validation_alias or field_name).upper()
        names.add(alias)
        if field.is_required():
            required.add(alias)
    return names, required


def process_name(service: str) -> str:
    return service.removesuffix("-worker")


def test_one_database_one_redis_and_five_processes_apart_from_their_workers(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "redis", *ROLES}
    redis = compose["services"]["redis"]
    assert "ping" in " ".join(redis["healthcheck"]["test"])
    assert not redis.get("ports")
    database = compose["services"]["postgres"]
    assert "pgdata:/var/lib/postgresql/data" in database["volumes"]
    assert "pgdata" in compose["volumes"]
    assert "pg_isready" in " ".join(database["healthcheck"]["test"])


def test_only_the_gateway_is_published(compose: dict[str, Any]) -> None:
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"gateway"}
    assert compose["services"]["gateway"]["ports"] == ["${GATEWAY_PORT:-8000}:8000"]


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in SECRET_WORDS):
                assert re.fullmatch(r"\$\{[A-Z_]+(:[?-][^}]*)?\}", str(value)), f"{name}.{key} holds a literal"
        database_url = (service.get("environment") or {}).get("DATABASE_URL", "")
        if database_url:
            # its own login role, whose password comes from the environment
            process = process_name(name)
            assert database_url.startswith(f"postgresql://reciprocity_{process}:${{{process.upper()}_DB_PASSWORD:?")


@pytest.mark.parametrize("service_name", ROLES)
def test_process_matches_its_code(compose: dict[str, Any], service_name: str) -> None:
    service = compose["services"][service_name]
    name = process_name(service_name)
    port = PROCESSES[name]
    environment: dict[str, str] = service["environment"]
    reads, required = env_names(settings_class(name))
    assert environment["PROCESS_ROLE"] == ROLES[service_name]
    if name in SHARING:
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        if ROLES[service_name] == "api":
            assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    else:
        assert "REDIS_URL" not in environment

    unknown = set(environment) - reads
    assert not unknown, f"{name} is given settings it never reads: {unknown}"
    missing = required - set(environment)
    assert not missing, f"{name} cannot start without {missing}"
    assert environment[f"{name.upper()}_PORT"] == str(port)

    assert service["command"] == ["python", "-m", name, "serve", "--host", "0.0.0.0"]
    assert importlib.util.find_spec(f"{name}.__main__") is not None

    health = HEALTH_URL.search(" ".join(service["healthcheck"]["test"]))
    assert health and int(health.group(1)) == port

    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    dockerfile = ROOT / service["build"]["dockerfile"]
    assert service["build"]["context"] == "."
    text = dockerfile.read_text()
    assert f"EXPOSE {port}" in text
    for source in re.findall(r"^COPY (\S+) ", text, flags=re.MULTILINE):
        assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which does not exist"
    if ROLES[service_name] == "worker":
        assert not service.get("expose") and not service.get("ports"), "a worker serves no traffic"
    elif name != "gateway":
        assert service.get("expose") == [str(port)]


def test_gateway_finds_every_service_and_waits_for_it(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    for name, port in PROCESSES.items():
        if name == "gateway":
            continue
        assert gateway["environment"][f"{name.upper()}_URL"] == f"http://{name}:{port}"
        assert gateway["depends_on"][name]["condition"] == "service_healthy"


def local_environment(
    environment: dict[str, str], database_url: str, ports: dict[str, int], own_port: int, redis_url: str
) -> dict[str, str]:
    """Compose's environment, made runnable on this machine: variables filled in, hosts moved to loopback."""
    values = {
        "LOYALTY_INTERNAL_TOKEN": "compose-internal-token-0123456789",
        "LOYALTY_ADMIN_KEY": "compose-admin-key-0123456789",
        "LOYALTY_JWT_SECRET": "compose-jwt-secret-0123456789",
    }

    def substitute(value: str) -> str:
        def one(match: re.Match[str]) -> str:
            name, _, default = match.group(1), match.group(2), match.group(3) or ""
            return values.get(name, "" if _ == ":?" else default)

        return re.sub(r"\$\{([A-Z_]+)(?:(:[?-])([^}]*))?\}", one, value)

    env = {key: substitute(str(value)) for key, value in environment.items()}
    env["DATABASE_URL"] = database_url
    for name, port in ports.items():
        if f"{name.upper()}_URL" in env:
            env[f"{name.upper()}_URL"] = f"http://127.0.0.1:{port}"
        if f"{name.upper()}_PORT" in env:
            env[f"{name.upper()}_PORT"] = str(own_port)
    if "REDIS_URL" in env:
        env["REDIS_URL"] = redis_url
    env["MAIL_DIR"] = str(ARTIFACTS / "compose-mail")
    return env


@pytest.mark.slow
async def test_compose_commands_run_as_local_processes(compose: dict[str, Any], platform: Platform) -> None:
    """Every api process and worker, as compose starts them; Redis is named but not running here, so the
    processes that share state through it must serve on (ready) with limits of their own."""
    ports = {name: free_port() for name in ROLES}
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    started: list[ServiceProcess] = []
    try:
        for name in ROLES:  # api processes first, the gateway last among them, as depends_on orders it
            service = compose["services"][name]
            command = service["command"]
            assert command[:2] == ["python", "-m"]
            env = local_environment(service["environment"], platform.env["DATABASE_URL"], ports, ports[name], redis_url)
            process = ServiceProcess(command[2], ports[name], env, ARTIFACTS / "logs" / f"compose-{name}.log")
            process.start()
            started.append(process)
        await asyncio.gather(*(p.wait_ready(timeout=120) for p in started))
        async with httpx.AsyncClient() as client:
            for name in ROLES:
                check = compose["services"][name]["healthcheck"]["test"]
                path = HEALTH_URL.search(" ".join(check)).group(2)  # type: ignore[union-attr]
                response = await client.get(f"http://127.0.0.1:{ports[name]}{path}")
                assert response.status_code == 200, (name, response.text)
    finally:
        for process in started:
            process.stop()
    assert sys.executable


async def test_each_process_logs_in_as_a_role_that_cannot_become_another() -> None:
    """The postgres container's init script, run against a server of this test's own: each role migrates and
    owns its schema, and neither `SET ROLE` nor `RESET ROLE` takes it anywhere else."""
    import asyncpg
    import pgserver

    from kit.migrations import upgrade

    # under .data like the suite's own server: pgserver runs postgres as its own system user when root
    pgdata = ROOT / ".data" / f"roles-pg-{os.getpid()}"
    server = await asyncio.to_thread(pgserver.get_server, pgdata, cleanup_mode="delete")
    try:
        server.psql("CREATE DATABASE reciprocity;")
        socket_dir = str(server.get_uri()).split("host=")[1]
        bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"
        passwords = {f"{name.upper()}_DB_PASSWORD": f"pw-{name}" for name in PROCESSES}
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "PGHOST": socket_dir,
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "reciprocity",
            **passwords,
        }
        script = await asyncio.create_subprocess_exec(
            "sh", str(ROOT / "deploy" / "postgres" / "init-roles.sh"), env=env, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await script.communicate()
        assert script.returncode == 0, stderr.decode()

        def url(role: str) -> str:
            return f"postgresql://{role}@/reciprocity?host={socket_dir}"

        sqlalchemy_url = asyncpg_url(url("reciprocity_points"))
        await asyncio.to_thread(upgrade, ROOT / "services/points/points/migrations", sqlalchemy_url, "points")
        connection = await asyncpg.connect(url("reciprocity_points"))
        try:
            assert await connection.fetchval("SELECT count(*) FROM points.accounts") == 0
            for other in ("reciprocity_coupon", "postgres"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await connection.execute(f'SET ROLE "{other}"')
            await connection.execute("RESET ROLE")
            assert await connection.fetchval("SELECT current_user") == "reciprocity_points"
            assert not await connection.fetchval(
                "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute("CREATE TABLE coupon.stolen (id int)")
        finally:
            await connection.close()
    finally:
        await asyncio.to_thread(server.cleanup)


def test_the_recommend_worker_runs_with_the_api_process_settings(compose: dict[str, Any]) -> None:
    """The worker trains the model the api process serves: the same settings but the role."""
    api = dict(compose["services"]["recommend"]["environment"])
    worker = dict(compose["services"]["recommend-worker"]["environment"])
    assert (api.pop("PROCESS_ROLE"), worker.pop("PROCESS_ROLE")) == ("api", "worker")
    assert api == worker
    assert compose["services"]["recommend-worker"]["command"] == compose["services"]["recommend"]["command"]
