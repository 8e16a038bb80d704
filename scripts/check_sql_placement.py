"""Refuse SQL outside repositories, tables and migrations (run by `make lint` and by the landing script).

Where SQL may live, in the platform's packages (libs/kit/kit, gateway/gateway, services/<name>/<name>):
`repository.py`, `*_repository.py`, any file under a `repositories/` folder, `tables.py`, and anything under
`migrations/` (with the kit's migration runner, `kit/migrations.py`: see MIGRATION_MACHINERY). Everywhere else in
those packages a statement is an offence, reported as `file:line: what`.

What counts as SQL is read from the syntax tree, not grepped, so comments, docstrings and prose that say "select"
do not count:
- a string literal (or the literal parts of an f-string) shaped like a statement: `SELECT ... FROM`, `INSERT INTO`,
  `UPDATE x SET`, `DELETE FROM`, `WITH x AS (`, `FOR UPDATE`, `ON CONFLICT`, `TRUNCATE`, `NOTIFY`/`LISTEN`,
  `SET LOCAL`, `CREATE`/`ALTER`/`DROP` of a schema object;
- a call of SQLAlchemy's statement builders: `select(`, `insert(`, `update(`, `delete(`, `text(` (and `union`,
  `exists`), by whatever name they were imported under from `sqlalchemy...`, or as `sa.select(` on the module;
- `.select()` / `.insert()` / `.update()` / `.delete()` on a table imported from a `tables` module.

Out of scope: `scripts/` and `tests/` (tools and fixtures that set up or inspect a database directly).

There are no exceptions: the allowlist the check started with (files still being moved) ended empty and is gone.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Keywords in capitals, as the platform writes SQL: anywhere in the string. The same shapes in lower case count only
# at the start of a string, where prose ("Select a campaign from the list") would start with a capital; the two
# shapes short enough to be prose ("select one", "set to zero") count in capitals only.
_SHAPES = (
    ("SELECT", r"\bSELECT\s.+?\bFROM\s+[\w\"(]"),
    ("SELECT", r"^\s*SELECT\s+[\w\"*(]"),  # SELECT 1, SELECT pg_advisory_lock(...)
    ("INSERT", r"\bINSERT\s+INTO\s+[\w\"]"),
    ("UPDATE", r"\bUPDATE\s+[\w.\"]+\s+SET\s+[\w\"]+\s*="),
    ("DELETE", r"\bDELETE\s+FROM\s+[\w\"]"),
    ("WITH", r"\bWITH\s+(RECURSIVE\s+)?\w+\s*(\([\w\s,]*\)\s*)?AS\s+(NOT\s+)?(MATERIALIZED\s+)?\("),
    ("FOR UPDATE", r"\bFOR\s+(NO\s+KEY\s+)?UPDATE\b"),
    ("ON CONFLICT", r"\bON\s+CONFLICT\s*(\(|DO\b|ON\s+CONSTRAINT)"),
    ("TRUNCATE", r"^\s*TRUNCATE\s+(TABLE\s+)?[\w\"]"),
    ("NOTIFY", r"^\s*(NOTIFY|LISTEN|UNLISTEN)\s+[\w\"]"),
    ("SET", r"^\s*SET\s+(LOCAL\s+|SESSION\s+)?[\w.]+\s*(=|TO\b)"),
    ("DDL", r"^\s*(CREATE|ALTER|DROP)\s+(UNIQUE\s+)?(TABLE|INDEX|SCHEMA|VIEW|FUNCTION|TRIGGER|EXTENSION|TYPE|ROLE)\b"),
)
STATEMENT_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.DOTALL)) for name, pattern in _SHAPES
) + tuple(
    (name, re.compile(r"^\s*" + pattern.lower().removeprefix("^\\s*").removeprefix(r"\b"), re.DOTALL))
    for name, pattern in _SHAPES
    if name != "SET" and pattern != _SHAPES[1][1]
)


# Statement builders, as named in SQLAlchemy's modules (sqlalchemy, sqlalchemy.dialects.postgresql, ...).
BUILDERS = frozenset({"select", "insert", "update", "delete", "text", "union", "union_all", "exists"})
TABLE_METHODS = frozenset({"select", "insert", "update", "delete"})


def in_scope(parts: tuple[str, ...]) -> bool:
    """A module of the platform's packages (not scripts/ or tests/), by its path's parts under the root."""
    if parts[:3] == ("libs", "kit", "kit") or parts[:2] == ("gateway", "gateway"):
        return True
    return len(parts) > 3 and parts[0] == "services" and parts[2] == parts[1]


# The migration runner: its statements are the migrations' own kind (creating the schema and its role, the lock that
# makes replicas migrate in turn, Alembic's version table), run on Alembic's synchronous connection before any
# repository could have a schema to work in. It counts as part of migrations/.
MIGRATION_MACHINERY = frozenset({("libs", "kit", "kit", "migrations.py")})


def may_hold_sql(parts: tuple[str, ...]) -> bool:
    name = parts[-1]
    return (
        parts in MIGRATION_MACHINERY
        or name in {"repository.py", "tables.py"}
        or name.endswith("_repository.py")
        or "repositories" in parts[:-1]
        or "migrations" in parts[:-1]
    )


def platform_modules(root: Path) -> Iterator[tuple[str, ...]]:
    """The platform's modules, as their path's parts under `root` (only the packages are walked, not .venv)."""
    packages = [root / "libs" / "kit" / "kit", root / "gateway" / "gateway"]
    if (root / "services").is_dir():
        packages += [service / service.name for service in sorted((root / "services").iterdir())]
    for package in packages:
        for path in sorted(package.rglob("*.py")) if package.is_dir() else []:
            parts = path.relative_to(root).parts
            if in_scope(parts):
                yield parts


def docstring_nodes(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings (prose, never SQL)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def sql_shape(text: str) -> str | None:
    for name, pattern in STATEMENT_SHAPES:
        if pattern.search(text):
            return name
    return None


class Finder(ast.NodeVisitor):
    def __init__(self, tree: ast.Module) -> None:
        self.docstrings = docstring_nodes(tree)
        self.builders: dict[str, str] = {}  # local name -> builder imported from sqlalchemy
        self.sqlalchemy_modules: set[str] = set()  # local names bound to a sqlalchemy module
        self.tables: set[str] = set()  # local names imported from a tables module
        self.offences: list[tuple[int, str]] = []

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "sqlalchemy":
                self.sqlalchemy_modules.add(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            local = alias.asname or alias.name
            if module.split(".")[0] == "sqlalchemy":
                if alias.name in BUILDERS:
                    self.builders[local] = alias.name
                elif alias.name in {"sql", "sqlalchemy"} or module.endswith("dialects"):
                    self.sqlalchemy_modules.add(local)
            elif module.split(".")[-1] == "tables" or module.endswith("_tables"):
                self.tables.add(local)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in self.builders:
            self.offences.append((node.lineno, f"SQLAlchemy {self.builders[func.id]}()"))
        elif isinstance(func, ast.Attribute):
            owner = func.value
            while isinstance(owner, ast.Attribute):
                owner = owner.value
            if isinstance(owner, ast.Name) and owner.id in self.sqlalchemy_modules and func.attr in BUILDERS:
                self.offences.append((node.lineno, f"SQLAlchemy {func.attr}()"))
            elif isinstance(owner, ast.Name) and owner.id in self.tables and func.attr in TABLE_METHODS:
                self.offences.append((node.lineno, f"table.{func.attr}()"))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and id(node) not in self.docstrings:
            shape = sql_shape(node.value)
            if shape:
                self.offences.append((node.lineno, f"{shape} statement in a string"))

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        # An f-string's literal parts joined with a placeholder, so `f"SELECT {columns} FROM t"` is seen whole.
        literal = "".join(str(part.value) if isinstance(part, ast.Constant) else " x " for part in node.values)
        shape = sql_shape(literal)
        if shape:
            self.offences.append((node.lineno, f"{shape} statement in an f-string"))
        for part in node.values:
            if not isinstance(part, ast.Constant):
                self.visit(part)


def offences_in(source: str) -> list[tuple[int, str]]:
    """Every SQL statement in a module's source, as (line, what); the checks above, on one module."""
    tree = ast.parse(source)
    finder = Finder(tree)
    # Imports first, so a builder imported below its first use (rare, but legal in a function) is still known.
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            finder.visit_Import(node)
        elif isinstance(node, ast.ImportFrom):
            finder.visit_ImportFrom(node)
    finder.visit(tree)
    return sorted(set(finder.offences))


def problems(root: Path) -> list[str]:
    """One line per offence: `file:line: what`."""
    found: list[str] = []
    for parts in platform_modules(root):
        if may_hold_sql(parts):
            continue
        relative = "/".join(parts)
        found += [
            f"{relative}:{line}: {what} outside a repository (move it to a repository)"
            for line, what in offences_in((root / relative).read_text(encoding="utf-8"))
        ]
    return found


def main() -> int:
    found = problems(ROOT)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
