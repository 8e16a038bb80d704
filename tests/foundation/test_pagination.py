"""The kit's typed cursors: what an endpoint hands out comes back as the declared types; anything else is a 422."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from kit.errors import ValidationFailed
from kit.pagination import PageParams, _decode_cursor, paginate


def _next_page(key: tuple[Any, ...]) -> PageParams:
    _, cursor = paginate([key, key], 1, key=lambda row: row)
    assert cursor is not None
    return PageParams(50, _decode_cursor(cursor))


def test_a_cursor_comes_back_as_the_declared_types() -> None:
    at, row_id = datetime(2026, 12, 3, 7, 50, 1, 123456, tzinfo=UTC), uuid.uuid4()
    assert _next_page((at.isoformat(), str(row_id))).after(datetime, uuid.UUID) == (at, row_id)
    assert _next_page((at, row_id)).after(datetime, uuid.UUID) == (at, row_id)
    assert _next_page((42,)).after(int) == (42,)
    assert _next_page((at.isoformat(), "CODE-1")).after(datetime, str) == (at, "CODE-1")
    assert PageParams(50).after(datetime, uuid.UUID) is None


@pytest.mark.parametrize(
    ("cursor", "types"),
    [
        ([], (int,)),
        ([1, 2], (int,)),
        ([True], (int,)),
        (["1"], (int,)),
        ([1.0], (int,)),
        ([2**63], (int,)),
        ([None], (str,)),
        (["a\x00"], (str,)),
        (["x" * 257], (str,)),
        (["2026-12-03T00:00:00"], (datetime,)),  # no zone: never one of ours
        (["0001-01-01T00:00:00+05:00"], (datetime,)),  # before year 1 in UTC: no timestamptz holds it
        (["9999-12-31T23:59:59-05:00"], (datetime,)),  # after year 9999 in UTC
        (["yesterday"], (datetime,)),
        ([1], (datetime,)),
        (["nope"], (uuid.UUID,)),
        ([["nested"]], (uuid.UUID,)),
    ],
)
def test_anything_else_is_a_validation_error(cursor: list[Any], types: tuple[type[Any], ...]) -> None:
    with pytest.raises(ValidationFailed) as refused:
        PageParams(50, cursor).after(*types)
    assert refused.value.extra["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("text", ["garbage!", "W10x", "e30", "////", "AAAA"])
def test_text_that_is_not_a_list_is_refused(text: str) -> None:
    with pytest.raises(ValidationFailed):
        _decode_cursor(text)
