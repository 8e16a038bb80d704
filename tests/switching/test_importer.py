"""`make import` (scripts/importer.py) against the running test platform, as the person doing the switch
would run it: a CSV of another programme's columns mapped on the command line, run twice."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import httpx
import orjson

from tests.conftest import ADMIN_KEY, Platform

ROOT = Path(__file__).resolve().parents[2]


async def run_importer(platform: Platform, *args: str, chunk_lines: int = 5000) -> tuple[int, str]:
    env = {**os.environ, "LOYALTY_ADMIN_KEY": ADMIN_KEY, "PUBLIC_BASE_URL": platform.gateway_url}
    env["IMPORT_CHUNK_LINES"] = str(chunk_lines)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scripts.importer", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_balances_from_another_programme_mapped_and_run_twice(
    platform: Platform, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    members = [f"m-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    export = tmp_path / "members.csv"
    export.write_text(
        "Member ID,Points Balance,Export Ref,Tier Points,Name\n"
        f"{members[0]},250,ref-a,0,Ann\n"
        f"{members[1]},not-a-number,ref-b,0,Ben\n"
        f"{members[2]},75,ref-c,1500,Cat\n"
    )
    mapping = ["--map", "customer_id=Member ID", "--map", "points=Points Balance", "--map", "reference=Export Ref"]
    mapping += ["--map", "qualifying_points=Tier Points"]
    status, output = await run_importer(platform, "balances", str(export), *mapping)
    assert status == 1, output
    assert "line 3: points:" in output
    assert "2 accepted, 0 duplicates, 1 rejected" in output

    status, output = await run_importer(platform, "balances", str(export), *mapping)
    assert "0 accepted, 2 duplicates, 1 rejected" in output, output
    balances = [(await admin.get(f"/v1/customers/{m}/points")).json() for m in members]
    assert [b["balance"] for b in balances] == [250, 0, 75]
    assert balances[2]["tier"] == "silver"


async def test_opt_outs_as_ndjson_exit_zero(platform: Platform, tmp_path: Path) -> None:
    export = tmp_path / "opt-outs.ndjson"
    customer, email = f"o-{uuid.uuid4().hex[:10]}", f"x{uuid.uuid4().hex[:6]}@example.com"
    export.write_text(f'{{"customer_id": "{customer}"}}\n\n{{"email": "{email}"}}\n')
    status, output = await run_importer(platform, "opt-outs", str(export))
    assert status == 0, output
    assert "2 accepted, 0 duplicates, 0 rejected" in output


async def test_an_export_without_references_is_idempotent_by_member(
    platform: Platform, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    member = f"m-{uuid.uuid4().hex[:10]}"
    export = tmp_path / "smile-style.csv"
    export.write_text(f"id,points\n{member},90\n")
    args = ["balances", str(export), "--map", "customer_id=id", "--reference-prefix", "smile-"]
    assert (await run_importer(platform, *args))[0] == 0
    status, output = await run_importer(platform, *args)
    assert status == 0 and "0 accepted, 1 duplicates" in output, output
    ledger = (await admin.get(f"/v1/customers/{member}/points/transactions")).json()["items"]
    assert [(t["points"], t["reference"]) for t in ledger] == [(90, f"smile-{member}")]


async def test_many_chunks_two_in_flight_keep_the_files_line_numbers(
    platform: Platform, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    members = [f"k-{uuid.uuid4().hex[:10]}" for _ in range(9)]
    lines = [{"customer_id": m, "points": 10 + i, "reference": "open"} for i, m in enumerate(members)]
    lines[6]["points"] = -1  # line 7 of the file, in the fourth chunk of two lines
    lines.append(lines[0])  # the first member again, in the last chunk: a duplicate
    export = tmp_path / "members.ndjson"
    export.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    status, output = await run_importer(platform, "balances", str(export), chunk_lines=2)
    assert status == 1, output
    assert "line 7: points:" in output
    assert "8 accepted, 1 duplicates, 1 rejected" in output, output
    balances = [(await admin.get(f"/v1/customers/{m}/points")).json()["balance"] for m in members]
    assert balances == [10 + i if i != 6 else 0 for i in range(9)]
