"""Cursor pagination: `?limit=` (1-200, default 50) and `?cursor=`; responses are `{items, next_cursor}`.

A cursor is the opaque, URL-safe encoding of the last row's sort key; the next page starts after it. The
endpoint declares the types of its sort key when it reads the cursor (`page.after(datetime, UUID)`): a cursor of
any other shape, length or type is a 422 `validation_error` on `cursor`, never a database error. A cursor is
not a secret (anyone can forge one), so it is checked as strictly as any other input.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar, overload

import orjson
from fastapi import Depends, Query
from pydantic import BaseModel

from kit.errors import FieldError, ValidationFailed

__all__ = ["Page", "PageParams", "PageParamsDep", "encode_cursor", "paginate"]

T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")

MAX_CURSOR_LENGTH = 512
# A cursor's text parts are sort keys stored by the service (codes, ids): short, printable.
MAX_TEXT_PART = 256
_INT64 = 1 << 63


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def _invalid() -> ValidationFailed:
    return ValidationFailed([FieldError("cursor", "Not a cursor returned by this endpoint.")])


def _printable(value: str) -> bool:
    return all(" " <= ch != "\x7f" for ch in value)


def _storable(moment: datetime) -> bool:
    """Whether a timestamptz can hold it: in UTC it must stay within years 1-9999 (`0001-01-01T00:00+05:00` does
    not, and the driver would refuse it as a database error)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _typed(value: Any, kind: type[Any]) -> Any:
    """One part of a sort key as `kind`, or :func:`_invalid`. `bool` is not an `int` here."""
    if kind is int:
        if type(value) is int and -_INT64 <= value < _INT64:
            return value
    elif isinstance(value, str) and len(value) <= MAX_TEXT_PART and _printable(value):
        if kind is str:
            return value
        if kind is uuid.UUID:
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
        elif kind is datetime:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                if parsed.tzinfo is not None and _storable(parsed):  # every sort key is a timestamptz
                    return parsed
        else:
            raise TypeError(f"cursors hold int, str, UUID and datetime, not {kind!r}")
    raise _invalid()


class PageParams:
    """`limit`, and the decoded cursor that :meth:`after` checks against the endpoint's sort key."""

    __slots__ = ("_cursor", "limit")

    def __init__(self, limit: int, cursor: list[Any] | None = None) -> None:
        self.limit = limit
        self._cursor = cursor

    @overload
    def after(self, first: type[A], /) -> tuple[A] | None: ...
    @overload
    def after(self, first: type[A], second: type[B], /) -> tuple[A, B] | None: ...
    @overload
    def after(self, first: type[A], second: type[B], third: type[C], /) -> tuple[A, B, C] | None: ...

    def after(self, *types: type[Any]) -> tuple[Any, ...] | None:
        """The sort key the page starts after (None on the first page), each part of the declared type."""
        if self._cursor is None:
            return None
        if len(self._cursor) != len(types):
            raise _invalid()
        return tuple(_typed(value, kind) for value, kind in zip(self._cursor, types, strict=True))


def encode_cursor(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key), default=str)).decode().rstrip("=")


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        value = None
    if not isinstance(value, list):
        raise _invalid()
    return value


async def _page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page.")
    ] = None,
) -> PageParams:
    return PageParams(limit, _decode_cursor(cursor) if cursor else None)


PageParamsDep = Annotated[PageParams, Depends(_page_params)]


def paginate(rows: Sequence[R], limit: int, key: Callable[[R], Sequence[Any]]) -> tuple[list[R], str | None]:
    """Rows were fetched with `limit + 1`; the extra row only says whether another page exists."""
    if len(rows) > limit:
        page = list(rows[:limit])
        return page, encode_cursor(key(page[-1]))
    return list(rows), None
