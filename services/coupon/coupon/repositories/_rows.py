"""Typed rows from what the drivers answer, and SELECT lists from the rows' fields (one source for both)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from sqlalchemy import Row

T = TypeVar("T")


_NAMES: dict[type[Any], tuple[str, ...]] = {}


def names(row_type: type[Any]) -> tuple[str, ...]:
    """The fields of a row dataclass, in order."""
    known = _NAMES.get(row_type)
    if known is None:
        known = _NAMES[row_type] = tuple(field.name for field in fields(row_type))
    return known


def columns(row_type: type[Any], alias: str = "") -> str:
    """The SELECT list of a row dataclass: its field names, qualified by `alias` when given."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + name for name in names(row_type))


def typed(row_type: type[T], row: Row[Any] | Mapping[str, Any]) -> T:
    """A SQLAlchemy row or an asyncpg record as `row_type`, whose fields name its columns."""
    mapping = row._mapping if isinstance(row, Row) else row
    return row_type(**{name: mapping[name] for name in names(row_type)})
