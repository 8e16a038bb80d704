"""Bulk imports of lines, one way for every service (contract v1.1, "Switching to Reciprocity").

A call carries NDJSON (`application/x-ndjson`) or CSV (`text/csv`, a header naming the same fields as the JSON
objects; an empty cell is an absent field), at most :data:`MAX_LINES` lines (more is 413). Each line is
validated on its own against the route's pydantic model: a bad line is reported by number with its field
errors and the others go on. :func:`parse_lines` does that part; the domain applies the valid lines and
counts them into an :class:`ImportReport` (accepted, duplicates, rejected).
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from kit.errors import FieldError, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

__all__ = [
    "IMPORT_MEDIA_TYPES",
    "MAX_LINES",
    "ImportReport",
    "ParsedLines",
    "PayloadTooLarge",
    "RejectedLine",
    "UnsupportedMediaType",
    "media_kind",
    "numbered_lines",
    "parse_lines",
]

MAX_LINES = 10_000
MAX_LINE_BYTES = 64 * 1024
IMPORT_MEDIA_TYPES = {
    "text/csv": {"schema": {"type": "string"}},
    "application/x-ndjson": {"schema": {"type": "string"}},
}

M = TypeVar("M", bound=BaseModel)


class RejectedLine(BaseModel):
    line: int
    errors: list[dict[str, str]]


class ImportReport(BaseModel):
    accepted: int = 0
    duplicates: int = 0
    rejected: list[RejectedLine] = []


@dataclass
class ParsedLines(Generic[M]):
    valid: list[tuple[int, M]] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)

    def reject(self, line: int, errors: list[FieldError]) -> None:
        self.rejected.append(RejectedLine(line=line, errors=[dict(e) for e in errors]))

    def report(self, accepted: int, duplicates: int, refused: list[RejectedLine] | None = None) -> ImportReport:
        """The call's answer: lines refused while applying (a clash found in the database) join the bad ones."""
        rejected = sorted([*self.rejected, *(refused or [])], key=lambda r: r.line)
        return ImportReport(accepted=accepted, duplicates=duplicates, rejected=rejected)


def media_kind(content_type: str) -> Literal["csv", "jsonl"]:
    media = content_type.split(";")[0].strip().lower()
    if media in ("text/csv", "application/csv"):
        return "csv"
    if media in ("application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/json-lines"):
        return "jsonl"
    raise UnsupportedMediaType(
        "Send CSV (text/csv) or JSON lines (application/x-ndjson).", content_type=content_type or None
    )


async def numbered_lines(chunks: AsyncIterator[bytes]) -> AsyncGenerator[tuple[int, bytes], None]:
    """Numbered lines of a streamed body (1 = the first), without loading the body whole."""
    buffer = b""
    number = 0
    async for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            number += 1
            if len(line) > MAX_LINE_BYTES:  # whether it arrived whole in one chunk or over several
                raise _too_long(number)
            yield number, line.rstrip(b"\r")
        if len(buffer) > MAX_LINE_BYTES:
            raise _too_long(number + 1)
    if buffer.strip():
        yield number + 1, buffer.rstrip(b"\r")


def _too_long(number: int) -> ValidationFailed:
    return ValidationFailed([FieldError("body", f"Line {number} is longer than {MAX_LINE_BYTES} bytes.")])


def _field_errors(error: ValidationError) -> list[FieldError]:
    return [
        FieldError(".".join(str(part) for part in e["loc"]) or "line", e["msg"].removeprefix("Value error, "))
        for e in error.errors()
    ]


_BATCH_ADAPTERS: dict[type[BaseModel], TypeAdapter[Any]] = {}


def _batch_adapter(model: type[M]) -> TypeAdapter[list[M]]:
    adapter = _BATCH_ADAPTERS.get(model)
    if adapter is None:
        adapter = _BATCH_ADAPTERS[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return adapter


async def parse_lines(
    chunks: AsyncIterator[bytes], content_type: str, model: type[M], *, max_lines: int = MAX_LINES
) -> ParsedLines[M]:
    """Every non-blank line validated against `model`; numbers count the CSV header as line 1.

    The common case, a file with no bad line, is validated in one call of pydantic-core over all its lines,
    each decoded alone first: a third less CPU a line than a validation call per line. When that call finds any
    fault, every line is judged alone, so a bad line is reported with its own number and errors, and the others
    go on as before."""
    kind = media_kind(content_type)
    parsed: ParsedLines[M] = ParsedLines()
    lines: list[tuple[int, bytes]] = []
    header: list[str] | None = None
    async with contextlib.aclosing(numbered_lines(chunks)) as numbered:
        async for number, raw in numbered:
            if raw.strip():
                lines.append((number, raw))
                if len(lines) > max_lines + 1:  # the +1: a CSV header; the rest of the body is not read
                    break
    if kind == "csv" and lines:
        first, raw = lines.pop(0)
        try:
            header = [cell.strip().lower() for cell in next(csv.reader([raw.decode("utf-8")]))]
        except UnicodeDecodeError:
            parsed.reject(first, [FieldError("line", "Not UTF-8.")])
    if len(lines) > max_lines:
        raise PayloadTooLarge(f"At most {max_lines} lines a call; split the file.", max_lines=max_lines)
    if not lines:
        return parsed
    if not parsed.rejected:
        try:
            # each line decoded alone (never the lines joined into one JSON text: a string left open on one
            # line could swallow the next), then all validated at once
            if kind == "jsonl":
                records: list[Any] = [orjson.loads(raw) for _, raw in lines]
            else:
                assert header is not None
                records = [_csv_record(header, raw.rstrip(b"\r")) for _, raw in lines]
            models = _batch_adapter(model).validate_python(records, strict=_strictness(kind))
        except (ValidationError, ValueError):  # orjson's and UTF-8's decoding errors are ValueErrors
            pass
        else:
            parsed.valid = [(n, m) for (n, _), m in zip(lines, models, strict=True)]
            return parsed
    for number, raw in lines:
        _parse_line(parsed, kind, header, number, raw.rstrip(b"\r"), model)
    return parsed


class _TooManyCells(ValueError):
    pass


def _strictness(kind: str) -> bool | None:
    """CSV cells are all text, so numbers are read from text; a JSON line is judged exactly as the body of a single
    request (a field the model declares strict, such as an item's quantity, refuses `"2"` there too)."""
    return False if kind == "csv" else None


def _csv_record(header: list[str], raw: bytes) -> dict[str, str]:
    cells = next(csv.reader([raw.decode("utf-8")]))
    if len(cells) > len(header):
        raise _TooManyCells
    return {name: cell for name, cell in zip(header, cells, strict=False) if cell != ""}


def _parse_line(
    parsed: ParsedLines[M], kind: str, header: list[str] | None, number: int, raw: bytes, model: type[M]
) -> None:
    try:
        if kind == "csv":
            if header is None:
                parsed.reject(number, [FieldError("line", "The header is not UTF-8.")])
                return
            try:
                record: Any = _csv_record(header, raw)
            except _TooManyCells:
                parsed.reject(number, [FieldError("line", "More cells than the header names.")])
                return
        else:
            record = orjson.loads(raw)
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        parsed.reject(number, [FieldError("line", "Not valid UTF-8 JSON." if kind == "jsonl" else "Not UTF-8.")])
        return
    if not isinstance(record, dict):
        parsed.reject(number, [FieldError("line", "Each line must be a JSON object.")])
        return
    try:
        parsed.valid.append((number, model.model_validate(record, strict=_strictness(kind))))
    except ValidationError as exc:
        parsed.reject(number, _field_errors(exc))
