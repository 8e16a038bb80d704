"""The SQL placement check (`make lint`): SQL outside a repository, table or migration is refused with file:line."""

import subprocess
import sys
from pathlib import Path

from scripts.check_sql_placement import ROOT, problems

DOMAIN_WITH_SQL = '''\
"""Loyalty tiers: select the best tier from the customer's points."""
from sqlalchemy import select, text

from gateway.tables import api_keys


async def tier(session, customer_id):
    # select the tier from the ledger
    await session.execute(text("SELECT tier FROM tiers WHERE customer_id = :id"), {"id": customer_id})
    await session.execute(select(api_keys.c.id))
    await session.execute(api_keys.delete())
    return f"UPDATE tiers SET tier = {customer_id!r}"
'''

PROSE = '''\
"""Select the campaign from the list; update the customer when they insert a code."""
from collections import Counter


def choose(options: dict[str, int]) -> str:
    """Select from the options: delete nothing, update nothing."""
    options.update({"select": 1})
    title = "Select a campaign from the list, or UPDATE your profile: SET LOCAL time zones FOR UPDATES."
    chosen = Counter(options).most_common(1)[0][0]
    return f"Please select a campaign from {len(options)} options, then update your profile."
'''


def write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


def test_sql_outside_a_repository_is_refused_with_its_line(tmp_path: Path) -> None:
    write(tmp_path, "gateway/gateway/tiers.py", DOMAIN_WITH_SQL)
    found = problems(tmp_path)
    assert [line.split(": ")[0] for line in found] == [
        "gateway/gateway/tiers.py:9",
        "gateway/gateway/tiers.py:9",
        "gateway/gateway/tiers.py:10",
        "gateway/gateway/tiers.py:11",
        "gateway/gateway/tiers.py:12",
    ]
    assert "SELECT statement" in found[0] + found[1] and "text()" in found[0] + found[1]


def test_sql_in_repositories_tables_and_migrations_passes(tmp_path: Path) -> None:
    for relative in (
        "gateway/gateway/repository.py",
        "gateway/gateway/tier_repository.py",
        "gateway/gateway/repositories/tiers.py",
        "libs/kit/kit/tables.py",
        "services/points/points/migrations/versions/2026_01_01_0001_tiers.py",
    ):
        write(tmp_path, relative, DOMAIN_WITH_SQL)
    assert problems(tmp_path) == []


def test_prose_and_comments_saying_select_pass(tmp_path: Path) -> None:
    write(tmp_path, "services/points/points/service.py", PROSE)
    assert problems(tmp_path) == []


def test_scripts_and_tests_are_out_of_scope(tmp_path: Path) -> None:
    write(tmp_path, "scripts/bench_tiers.py", DOMAIN_WITH_SQL)
    write(tmp_path, "tests/points/test_tiers.py", DOMAIN_WITH_SQL)
    assert problems(tmp_path) == []


def test_the_tree_passes() -> None:
    assert problems(ROOT) == []
    checked = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_sql_placement.py")], capture_output=True)
    assert checked.returncode == 0, checked.stdout
