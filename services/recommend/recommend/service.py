"""Domain logic of the recommend service: catalog, history import, preferences, purchases, and the calls into
the serving engine. No web framework here; problems are kit.errors."""

from __future__ import annotations

import csv
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from kit.errors import FieldError, NotFound, ValidationFailed
from kit.events import Event
from kit.imports import media_kind, numbered_lines
from recommend import repository
from recommend.engine import Engine, Item
from recommend.model import Mode
from recommend.repository import CatalogRow, InteractionRow
from recommend.schemas import (
    ImportError_,
    ImportResult,
    ModelInfo,
    Preferences,
    PreferencesIn,
    Product,
    ProductsPut,
    ProductsPutResult,
    RecommendedItem,
    RetrainAccepted,
    SimilarProducts,
)

log = structlog.get_logger("recommend.service")

IDENTIFIER = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
IMPORT_BATCH = 5_000
MAX_REPORTED_ERRORS = 1_000
CSV_COLUMNS = ("customer_id", "product_id", "quantity", "occurred_at")


# -- catalog --------------------------------------------------------------------------------------------------
async def put_products(session: AsyncSession, body: ProductsPut) -> ProductsPutResult:
    seen: set[str] = set()
    errors = []
    for n, item in enumerate(body.items):
        if item.product_id in seen:
            errors.append(FieldError(f"items.{n}.product_id", "Appears twice in this call."))
        seen.add(item.product_id)
    if errors:
        raise ValidationFailed(errors[:50])
    rows = [CatalogRow(i.product_id, i.name, i.category, i.price, i.currency, i.active) for i in body.items]
    before = await repository.catalog_marker(session)
    await repository.upsert_products(session, rows)
    changed = await repository.changed_since(session, before)
    return ProductsPutResult(received=len(rows), changed=changed)


async def get_product(session: AsyncSession, product_id: str) -> Product:
    row = await repository.get_product(session, product_id)
    if row is None:
        raise NotFound("No such product.", code="product_not_found")
    return row


# -- interactions ---------------------------------------------------------------------------------------------
def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("occurred_at must be an RFC 3339 time")
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse(record: dict[str, Any]) -> InteractionRow:
    customer = record.get("customer_id")
    product = record.get("product_id")
    if not isinstance(customer, str) or not IDENTIFIER.match(customer):
        raise ValueError("customer_id must be 1-64 characters [A-Za-z0-9._:-]")
    if not isinstance(product, str) or not IDENTIFIER.match(product):
        raise ValueError("product_id must be 1-64 characters [A-Za-z0-9._:-]")
    quantity = record.get("quantity", 1)
    if isinstance(quantity, str):
        quantity = int(quantity) if quantity.strip().isdigit() else -1
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 < quantity < 2**31:
        raise ValueError("quantity must be a positive integer")
    try:
        occurred_at = _timestamp(record.get("occurred_at"))
    except ValueError:
        raise ValueError("occurred_at must be an RFC 3339 time") from None
    return InteractionRow(customer, product, quantity, occurred_at)


async def import_interactions(
    session: AsyncSession, chunks: AsyncIterator[bytes], content_type: str, source: str = "import"
) -> ImportResult:
    """Validate each line on its own: a bad line (or an unknown product) is reported by number, the rest imported."""
    kind = media_kind(content_type)
    errors: list[ImportError_] = []
    rejected = 0
    imported = 0
    batch: list[tuple[int, InteractionRow]] = []
    header: list[str] | None = None

    def reject(line: int, message: str) -> None:
        nonlocal rejected
        rejected += 1
        if len(errors) < MAX_REPORTED_ERRORS:
            errors.append(ImportError_(line=line, message=message))

    async def flush() -> None:
        nonlocal imported
        known = await repository.existing_products(session, list({r.product_id for _, r in batch}))
        good = []
        for line, row in batch:
            if row.product_id in known:
                good.append(row)
            else:
                reject(line, f"unknown product {row.product_id!r}")
        await repository.insert_interactions(session, good, source)
        imported += len(good)
        batch.clear()

    async for number, raw in numbered_lines(chunks):
        if not raw.strip():
            continue
        try:
            if kind == "csv":
                fields = next(csv.reader([raw.decode("utf-8")]))
                if header is None:
                    header = [f.strip().lower() for f in fields]
                    missing = [c for c in CSV_COLUMNS if c not in header]
                    if missing:
                        raise ValidationFailed(
                            [FieldError("header", f"Line 1 must name the columns {', '.join(CSV_COLUMNS)}.")]
                        )
                    continue
                record: Any = dict(zip(header, fields, strict=False))
            else:
                record = orjson.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("each line must be a JSON object")
            batch.append((number, _parse(record)))
        except ValidationFailed:
            raise
        except (ValueError, UnicodeDecodeError, orjson.JSONDecodeError) as exc:
            reject(number, str(exc) if not isinstance(exc, orjson.JSONDecodeError) else "not valid JSON")
            continue
        if len(batch) >= IMPORT_BATCH:
            await flush()
    if batch:
        await flush()
    errors.sort(key=lambda e: e.line)
    log.info("recommend.imported", imported=imported, rejected=rejected)
    return ImportResult(imported=imported, rejected=rejected, errors=errors)


# -- preferences ----------------------------------------------------------------------------------------------
async def put_preferences(session: AsyncSession, customer_id: str, body: PreferencesIn) -> Preferences:
    categories = list(dict.fromkeys(body.categories))
    excluded = list(dict.fromkeys(body.excluded_categories))
    row = await repository.put_preferences(session, customer_id, categories, excluded)
    return row


async def get_preferences(session: AsyncSession, customer_id: str) -> Preferences:
    row = await repository.get_preferences(session, customer_id)
    if row is None:
        raise NotFound("This customer has no preferences.", code="preferences_not_found")
    return row


# -- purchases ------------------------------------------------------------------------------------------------
def _purchase_lines(event: Event) -> tuple[dict[str, CatalogRow], list[InteractionRow]] | None:
    """A `purchase.created` event's products (for the catalog) and interactions, or None when malformed."""
    payload = event.payload
    customer = payload.get("customer_id")
    items = payload.get("items") or []
    if not isinstance(customer, str) or not IDENTIFIER.match(customer) or not isinstance(items, list):
        log.warning("recommend.purchase_ignored", event_id=str(event.id), reason="malformed")
        return None
    try:
        occurred_at = _timestamp(payload.get("occurred_at"))
    except ValueError:
        occurred_at = event.occurred_at
    currency = payload.get("currency")
    catalog: dict[str, CatalogRow] = {}
    quantities: dict[str, int] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        product = item.get("product_id")
        if not isinstance(product, str) or not IDENTIFIER.match(product):
            continue
        quantity = item.get("quantity", 1)
        quantities[product] = quantities.get(product, 0) + (
            quantity if isinstance(quantity, int) and quantity > 0 else 1
        )
        catalog[product] = CatalogRow(
            product,
            str(item.get("name") or product)[:500],
            str(item.get("category") or "Other")[:100],
            _price(item.get("unit_price")),
            currency if isinstance(currency, str) and len(currency) == 3 and _price(item.get("unit_price")) else None,
            True,
        )
    rows = [InteractionRow(customer, p, q, occurred_at) for p, q in sorted(quantities.items())]
    return catalog, rows


async def record_purchase(session: AsyncSession, event: Event) -> None:
    """`purchase.created`: one interaction per product; unknown products join the catalog from the item."""
    await record_purchases(session, [event])


async def record_purchases(session: AsyncSession, events: Sequence[Event]) -> None:
    """A run of `purchase.created` events in three statements: the products the catalog lacks (each as the
    first purchase in the run names it, as one by one would), then every interaction with its purchase."""
    catalog: dict[str, CatalogRow] = {}
    rows: list[InteractionRow] = []
    sources: list[str] = []
    for event in events:
        lines = _purchase_lines(event)
        if lines is None or not lines[0]:
            continue
        for product, row in lines[0].items():
            catalog.setdefault(product, row)
        source = f"purchase:{str(event.payload.get('purchase_id', ''))[:64]}"
        rows += lines[1]
        sources += [source] * len(lines[1])
    if not catalog:
        return
    await repository.upsert_products(session, sorted(catalog.values(), key=lambda r: r.product_id), only_missing=True)
    await repository.insert_interactions(session, rows, sources)


def _price(value: Any) -> Decimal | None:
    try:
        price = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return price if price.is_finite() and price > 0 else None


# -- recommendations ------------------------------------------------------------------------------------------
def _items(items: Sequence[Item]) -> list[RecommendedItem]:
    return [
        RecommendedItem(product_id=i.product_id, name=i.name, category=i.category, score=i.score, reason=i.reason)
        for i in items
    ]


async def recommendations(
    engine: Engine, customer_id: str, *, limit: int, category: str | None, mode: Mode
) -> dict[str, Any]:
    """The `Recommendations` body as a plain dict: this is the hot path, and the fields are already checked."""
    result = await engine.recommendations(customer_id, limit=limit, category=category, mode=mode)
    return {
        "customer_id": customer_id,
        "strategy": result.strategy,
        "mode": mode.value,
        "model_version": result.model_version,
        "items": [
            {"product_id": i.product_id, "name": i.name, "category": i.category, "score": i.score, "reason": i.reason}
            for i in result.items
        ],
    }


async def similar_products(session: AsyncSession, engine: Engine, product_id: str, *, limit: int) -> SimilarProducts:
    if await repository.get_product(session, product_id) is None:
        raise NotFound("No such product.", code="product_not_found")
    items = engine.similar(product_id, limit=limit)
    return SimilarProducts(product_id=product_id, model_version=engine.view.model.version, items=_items(items))


def model_info(engine: Engine) -> ModelInfo:
    return ModelInfo.model_validate(engine.model_info())


async def retrain(session: AsyncSession, engine: Engine) -> RetrainAccepted:
    """Ask the recommend workers for a new model (recorded in this request's transaction); this process serves
    it once a worker stored it."""
    version = await repository.request_training(session)
    engine.requested = max(engine.requested, version)
    return RetrainAccepted(status="accepted", version=version)


# -- feedback -------------------------------------------------------------------------------------------------
def _purchase_of(event: Event) -> tuple[str, str] | None:
    customer = event.payload.get("customer_id")
    purchase = event.payload.get("purchase_id")
    if not isinstance(customer, str) or not IDENTIFIER.match(customer):
        return None
    if not isinstance(purchase, str) or not purchase or len(purchase) > 64:
        return None
    return customer, purchase


async def record_refund(session: AsyncSession, event: Event) -> None:
    """`purchase.refunded`: a whole refund marks every product of the purchase as refunded (never offered back to
    the customer); a partial one names no product, so it marks one only when the purchase had a single product."""
    found = _purchase_of(event)
    if found is None:
        log.warning("recommend.refund_ignored", event_id=str(event.id), reason="malformed")
        return
    customer, purchase = found
    if event.payload.get("amount") is not None and await repository.purchase_products(session, customer, purchase) != 1:
        return
    marked = await repository.record_feedback(session, customer, purchase, "refunded")
    log.info("recommend.refund_recorded", customer_id=customer, purchase_id=purchase, products=marked)


async def record_detractor(session: AsyncSession, event: Event) -> None:
    """`survey.detractor` about a purchase: its products weigh less for this customer (training and serving)."""
    found = _purchase_of(event)
    if found is None:
        return  # a detractor answer not about a purchase says nothing about products
    customer, purchase = found
    marked = await repository.record_feedback(session, customer, purchase, "detractor")
    log.info("recommend.detractor_recorded", customer_id=customer, purchase_id=purchase, products=marked)


async def record_preference(session: AsyncSession, event: Event) -> None:
    """`survey.preference`: the categories of the options a customer chose on a preference question."""
    customer = event.payload.get("customer_id")
    categories = event.payload.get("categories")
    if not isinstance(customer, str) or not IDENTIFIER.match(customer) or not isinstance(categories, list):
        log.warning("recommend.preference_ignored", event_id=str(event.id), reason="malformed")
        return
    wanted = [c.strip()[:100] for c in categories if isinstance(c, str) and c.strip()]
    if wanted:
        await repository.add_preferred_categories(session, customer, wanted)
