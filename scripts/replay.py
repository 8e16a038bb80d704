"""Online Retail invoices as `POST /v1/purchases` bodies: shared by the loop test, the benchmark and the demo."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

from scripts.online_retail import SAMPLE, Invoice, invoices

CENT = Decimal("0.01")


def purchase_payload(invoice: Invoice, *, with_email: bool = True) -> dict[str, Any]:
    """The same invoice always makes the same body, so replaying it is answered as the first time."""
    items = [
        {
            "product_id": row.product_id,
            "name": row.description[:200] or row.product_id,
            "category": row.category,
            "unit_price": str(row.unit_price),
            "quantity": row.quantity,
        }
        for row in invoice.rows
    ]
    total = sum((row.unit_price * row.quantity for row in invoice.rows), Decimal(0)).quantize(CENT)
    return {
        "purchase_id": f"uci-{invoice.invoice}",
        "customer_id": invoice.customer_id,
        "email": f"customer-{invoice.customer_id}@example.com" if with_email else None,
        "occurred_at": invoice.occurred_at.isoformat(),
        "currency": "GBP",
        "total": str(total),
        "items": items[:1000],
    }


def purchases(path: Path = SAMPLE, limit: int | None = None, *, with_email: bool = True) -> Iterator[dict[str, Any]]:
    for invoice in islice(invoices(path), limit):
        yield purchase_payload(invoice, with_email=with_email)
