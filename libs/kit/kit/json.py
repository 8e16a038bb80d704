"""One JSON encoder for responses, stored idempotent replays and events (orjson: fast, handles datetimes)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from fastapi.responses import JSONResponse

__all__ = ["ORJSONResponse", "dumps", "dumps_text", "loads"]


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_UTC_Z)


def dumps_text(value: Any) -> str:
    """For json/jsonb columns (SQLAlchemy wants text); keys that are not strings become strings, as with `json`."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS).decode()


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content)
