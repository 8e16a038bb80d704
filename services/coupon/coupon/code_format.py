"""Coupon codes: alphabets, the check character, normalisation, and fast generation from `secrets`.

A code is `PREFIX` + `length - 1` random characters + one check character (the length counts the check
character, not the prefix). The check character is Luhn mod N over the random part, N being the size of
the campaign's alphabet (for the odd N = 31 doubling is taken mod N, which keeps it a permutation): every
single mistyped character and most swaps of neighbours are caught before the database is asked.

Generation draws `secrets.token_bytes` and maps bytes to the alphabet by rejection sampling (a byte is
kept only below the largest multiple of N that fits in 256), so every character is uniform; numpy does the
mapping, the check characters and the COPY rows for a whole batch at once.
"""

from __future__ import annotations

import math
import secrets
import struct
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALPHABETS",
    "Charset",
    "CodeFormat",
    "check_character",
    "generate_bodies",
    "normalize",
]

Charset = Literal["unambiguous", "alphanumeric", "numeric"]

ALPHABETS: dict[str, str] = {
    # no 0/O, 1/I/L: characters that are misread on a receipt
    "unambiguous": "23456789ABCDEFGHJKMNPQRSTUVWXYZ",
    "alphanumeric": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "numeric": "0123456789",
}
SEPARATORS = str.maketrans("", "", " -\t_")


def normalize(code: str) -> str:
    """Case-insensitive, separators (spaces, dashes, underscores, tabs) ignored."""
    return code.translate(SEPARATORS).upper()


def _addend(value: int, factor: int, n: int) -> int:
    product = factor * value
    # Luhn's digit sum makes doubling a permutation only for an even N; for an odd N (31) doubling mod N is one.
    return product // n + product % n if n % 2 == 0 else product % n


def _luhn_sum(values: list[int], n: int, *, with_check: bool) -> int:
    # From the right, every second value (starting with the rightmost of the body) is doubled.
    total = 0
    factor = 1 if with_check else 2
    for value in reversed(values):
        total += _addend(value, factor, n)
        factor = 3 - factor
    return total


def check_character(body: str, charset: str) -> str:
    alphabet = ALPHABETS[charset]
    n = len(alphabet)
    total = _luhn_sum([alphabet.index(c) for c in body], n, with_check=False)
    return alphabet[(n - total % n) % n]


@dataclass(frozen=True)
class CodeFormat:
    prefix: str
    length: int
    charset: str

    @property
    def alphabet(self) -> str:
        return ALPHABETS[self.charset]

    @property
    def space(self) -> int:
        """How many different codes this format can make (the check character adds none)."""
        return len(self.alphabet) ** (self.length - 1)

    @property
    def space_bits(self) -> float:
        return math.log2(self.space)

    @cached_property
    def _values(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.alphabet)}

    def accepts(self, code: str) -> bool:
        """Whether a normalised code has this format and a correct check character."""
        if len(code) != len(self.prefix) + self.length or not code.startswith(self.prefix):
            return False
        lookup = self._values
        try:
            values = [lookup[c] for c in code[len(self.prefix) :]]
        except KeyError:
            return False
        return _luhn_sum(values, len(lookup), with_check=True) % len(lookup) == 0


def _random_values(count: int, n: int) -> npt.NDArray[np.uint8]:
    """`count` uniform values in [0, n) from the operating system's CSPRNG."""
    limit = 256 - 256 % n
    out = np.empty(count, dtype=np.uint8)
    filled = 0
    while filled < count:
        need = count - filled
        # ask for enough bytes that one draw almost always suffices
        raw = np.frombuffer(secrets.token_bytes(int(need * 256 / limit * 1.02) + 16), dtype=np.uint8)
        kept = raw[raw < limit][:need]
        out[filled : filled + kept.size] = kept % n
        filled += kept.size
    return out


def generate_bodies(fmt: CodeFormat, count: int) -> npt.NDArray[np.uint8]:
    """`count` codes (prefix, random part, check character) as a (count, width) array of ASCII bytes."""
    alphabet = fmt.alphabet
    n = len(alphabet)
    random_length = fmt.length - 1
    values = _random_values(count * random_length, n).reshape(count, random_length).astype(np.int32)
    # factors from the right: 2, 1, 2, ... over the body
    factors = np.array([2 if (random_length - 1 - i) % 2 == 0 else 1 for i in range(random_length)], dtype=np.int32)
    products = values * factors
    addends = products // n + products % n if n % 2 == 0 else products % n
    total = addends.sum(axis=1)
    check = (n - total % n) % n
    table = np.frombuffer(alphabet.encode(), dtype=np.uint8)
    chars = np.empty((count, len(fmt.prefix) + fmt.length), dtype=np.uint8)
    if fmt.prefix:
        chars[:, : len(fmt.prefix)] = np.frombuffer(fmt.prefix.encode(), dtype=np.uint8)
    chars[:, len(fmt.prefix) : -1] = table[values]
    chars[:, -1] = table[check]
    return chars


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def copy_rows(codes: npt.NDArray[np.uint8], campaign_id: uuid.UUID, seq_start: int) -> bytes:
    """COPY rows `(code, campaign_id, seq)` in PostgreSQL's binary format, built as one numpy record array
    (fixed width: no Python loop per code, and nothing for the server to parse)."""
    count, width = codes.shape
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("code_length", ">i4"),
            ("code", f"S{width}"),
            ("campaign_length", ">i4"),
            ("campaign", "S16"),
            ("seq_length", ">i4"),
            ("seq", ">i8"),
        ]
    )
    rows = np.empty(count, dtype=row)
    rows["fields"] = 3
    rows["code_length"] = width
    rows["code"] = np.ascontiguousarray(codes).view(f"S{width}").ravel()
    rows["campaign_length"] = 16
    rows["campaign"] = campaign_id.bytes
    rows["seq_length"] = 8
    rows["seq"] = np.arange(seq_start, seq_start + count, dtype=np.int64)
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def as_strings(codes: npt.NDArray[np.uint8]) -> list[str]:
    width = codes.shape[1]
    blob = codes.tobytes().decode("ascii")
    return [blob[i : i + width] for i in range(0, len(blob), width)]
