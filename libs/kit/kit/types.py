"""Field types from the contract's conventions, validated the same way in every service."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "CURRENCY_DECIMALS",
    "Currency",
    "CustomerIdPath",
    "Email",
    "Identifier",
    "Money",
    "Points",
    "StrictModel",
    "check_money",
]

IDENTIFIER_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_POINTS = 2**53

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]

# An address as the front door accepts it, and as every service takes it from an event: any characters but
# `@`, whitespace and control characters (so `josé@example.com`, sent with SMTPUTF8), a dot in the domain.
# Nothing that could break a header line; the mail server judges the rest.
_EMAIL_PART = r"[^@\s\x00-\x1f\x7f]"
EMAIL_PATTERN = rf"^{_EMAIL_PART}{{1,64}}@{_EMAIL_PART}+\.{_EMAIL_PART}+$"
Email = Annotated[str, StringConstraints(pattern=EMAIL_PATTERN, max_length=254)]
CustomerIdPath = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, description="Customer id.")]
Points = Annotated[int, Field(gt=0, lt=MAX_POINTS, strict=True)]

# ISO 4217 minor units for currencies that do not use two decimals; every other code uses two.
CURRENCY_DECIMALS: dict[str, int] = {
    "BHD": 3, "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "IQD": 3, "ISK": 0, "JOD": 3, "JPY": 0, "KMF": 0,
    "KRW": 0, "KWD": 3, "LYD": 3, "OMR": 3, "PYG": 0, "RWF": 0, "TND": 3, "UGX": 0, "UYI": 0, "VND": 0,
    "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
}  # fmt: skip

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


# pydantic refuses NaN and infinities for Decimal by default; gt=0 refuses the rest (no Python validator: an
# imported year calls this for half a million items)
Money = Annotated[Decimal, Field(gt=0, max_digits=18, json_schema_extra={"examples": ["12.50"]})]

# 10**decimals for each number of minor units: an amount fits when it times this is whole (C decimal arithmetic,
# a third of the cost of normalising and inspecting its exponent)
_MINOR_UNITS = {decimals: Decimal(10) ** decimals for decimals in (0, 2, 3)}


def check_money(amount: Decimal, currency: str) -> None:
    """Raise ValueError when `amount` has more decimals than `currency` allows (use in a model validator)."""
    decimals = CURRENCY_DECIMALS.get(currency, 2)
    if (amount * _MINOR_UNITS[decimals]) % 1:
        raise ValueError(f"{currency} amounts have at most {decimals} decimals")


class StrictModel(BaseModel):
    """Request bodies: unknown fields are refused (422), strings are not coerced into numbers."""

    model_config = ConfigDict(extra="forbid")
