"""Domain logic of the recommend service: catalog, history import, preferences, purchases, and the calls into
the serving engine. No web framework here; problems are kit.errors."""

from __future__ import annotations

import csv
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from kit.contracts import PurchaseCreated, PurchaseRefunded, SurveyDetractor, SurveyPreference
from kit.errors import FieldError, NotFound, ValidationFailed
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
def _purchase_lines(
    purchase: PurchaseCreated, occurred_at: datetime
) -> tuple[dict[str, CatalogRow], list[InteractionRow]]:
    """A purchase's products (for the catalog) and interactions, at the purchase's own time."""
    catalog: dict[str, CatalogRow] = {}
    quantities: dict[str, int] = {}
    for item in purchase.items:
        product = item["product_id"]
        quantities[product] = quantities.get(product, 0) + item["quantity"]
        catalog[product] = CatalogRow(
            product, item["name"], item["category"], item["unit_price"], purchase.currency, True
        )
    rows = [InteractionRow(purchase.customer_id, p, q, occurred_at) for p, q in sorted(quantities.items())]
    return catalog, rows


async def record_purchases(session: AsyncSession, purchases: Sequence[tuple[PurchaseCreated, datetime]]) -> None:
    """A run of `purchase.created` events (each with its business time) in three statements: the products the
    catalog lacks (each as the first purchase in the run names it, as one by one would), then every interaction
    with its purchase."""
    catalog: dict[str, CatalogRow] = {}
    rows: list[InteractionRow] = []
    sources: list[str] = []
    for purchase, occurred_at in purchases:
        products, interactions = _purchase_lines(purchase, occurred_at)
        for product, row in products.items():
            catalog.setdefault(product, row)
        rows += interactions
        sources += [f"purchase:{purchase.purchase_id}"] * len(interactions)
    if not catalog:
        return
    await repository.upsert_products(session, sorted(catalog.values(), key=lambda r: r.product_id), only_missing=True)
    await repository.insert_interactions(session, rows, sources)


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
async def record_refund(session: AsyncSession, refund: PurchaseRefunded) -> None:
    """`purchase.refunded`: a whole refund marks every product of the purchase as refunded (never offered back to
    the customer); a partial one names no product, so it marks one only when the purchase had a single product."""
    customer, purchase = refund.customer_id, refund.purchase_id
    if refund.amount is not None and await repository.purchase_products(session, customer, purchase) != 1:
        return
    marked = await repository.record_feedback(session, customer, purchase, "refunded")
    log.info("recommend.refund_recorded", customer_id=customer, purchase_id=purchase, products=marked)


async def record_detractor(session: AsyncSession, detractor: SurveyDetractor) -> None:
    """`survey.detractor` about a purchase: its products weigh less for this customer (training and serving)."""
    if detractor.purchase_id is None:
        return  # a detractor answer not about a purchase says nothing about products
    customer, purchase = detractor.customer_id, detractor.purchase_id
    marked = await repository.record_feedback(session, customer, purchase, "detractor")
    log.info("recommend.detractor_recorded", customer_id=customer, purchase_id=purchase, products=marked)


async def record_preference(session: AsyncSession, preference: SurveyPreference) -> None:
    """`survey.preference`: the categories of the options a customer chose on a preference question."""
    wanted = [c.strip() for c in preference.categories if c.strip()]
    if wanted:
        await repository.add_preferred_categories(session, preference.customer_id, wanted)
