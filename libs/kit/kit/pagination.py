"""Cursor pagination: `?limit=` (1-200, default 50) and `?cursor=`; responses are `{items, next_cursor}`.

A cursor is the opaque, URL-safe encoding of the last row's sort key; the next page starts after it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Depends, Query
from pydantic import BaseModel

from kit.errors import FieldError, ValidationFailed

__all__ = ["Page", "PageParams", "PageParamsDep", "decode_cursor", "encode_cursor", "paginate"]

T = TypeVar("T")
R = TypeVar("R")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class PageParams(BaseModel):
    limit: int
    after: list[Any] | None


def encode_cursor(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key), default=str)).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        value = None
    if not isinstance(value, list):
        raise ValidationFailed([FieldError("cursor", "Not a cursor returned by this endpoint.")])
    return value


async def _page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page.")] = None,
) -> PageParams:
    return PageParams(limit=limit, after=decode_cursor(cursor) if cursor else None)


PageParamsDep = Annotated[PageParams, Depends(_page_params)]


def paginate(rows: Sequence[R], limit: int, key: Callable[[R], Sequence[Any]]) -> tuple[list[R], str | None]:
    """Rows were fetched with `limit + 1`; the extra row only says whether another page exists."""
    if len(rows) > limit:
        page = list(rows[:limit])
        return page, encode_cursor(key(page[-1]))
    return list(rows), None
