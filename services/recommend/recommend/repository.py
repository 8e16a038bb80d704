"""SQL of the recommend service. Bulk paths go to asyncpg itself (COPY, unnest arrays): one round trip per
batch instead of one per row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from kit.db import array_columns, request_driver_connection
from recommend.schemas import Preferences, Product

__all__ = [
    "Aggregate",
    "CatalogRow",
    "InteractionRow",
    "ServingRead",
    "existing_products",
    "get_preferences",
    "get_product",
    "insert_interactions",
    "put_preferences",
    "read_for_serving",
    "request_training",
    "training_state",
    "upsert_products",
]


Model = TypeVar("Model", bound=BaseModel)


async def _fetch_one(session: AsyncSession, kind: type[Model], statement: str, *args: Any) -> Model | None:
    """The statement's row as `kind` (its columns by name), or None, in the request's transaction."""
    connection = await request_driver_connection(session)
    row = await connection.fetchrow(statement, *args)
    return None if row is None else kind.model_validate(dict(row))


@dataclass(frozen=True, slots=True)
class CatalogRow:
    product_id: str
    name: str
    category: str
    price: Decimal | None
    currency: str | None
    active: bool


_UPSERT_PRODUCTS = """
INSERT INTO products AS p (product_id, name, category, price, currency, active)
SELECT * FROM unnest($1::varchar[], $2::text[], $3::varchar[], $4::numeric[], $5::varchar[], $6::boolean[])
ON CONFLICT (product_id) DO UPDATE
   SET name = excluded.name, category = excluded.category, price = excluded.price, currency = excluded.currency,
       active = excluded.active, seq = nextval('catalog_seq'), updated_at = now()
 WHERE (p.name, p.category, p.price, p.currency, p.active)
       IS DISTINCT FROM (excluded.name, excluded.category, excluded.price, excluded.currency, excluded.active)
"""

_INSERT_MISSING_PRODUCTS = """
INSERT INTO products (product_id, name, category, price, currency, active)
SELECT * FROM unnest($1::varchar[], $2::text[], $3::varchar[], $4::numeric[], $5::varchar[], $6::boolean[])
ON CONFLICT (product_id) DO NOTHING
"""


async def upsert_products(session: AsyncSession, rows: Sequence[CatalogRow], *, only_missing: bool = False) -> None:
    connection = await request_driver_connection(session)
    statement = _INSERT_MISSING_PRODUCTS if only_missing else _UPSERT_PRODUCTS
    await connection.execute(statement, *array_columns(rows, CatalogRow))


async def catalog_marker(session: AsyncSession) -> int:
    connection = await request_driver_connection(session)
    return int(await connection.fetchval("SELECT coalesce(max(seq), 0) FROM products"))


async def changed_since(session: AsyncSession, seq: int) -> int:
    connection = await request_driver_connection(session)
    return int(await connection.fetchval("SELECT count(*) FROM products WHERE seq > $1", seq))


async def get_product(session: AsyncSession, product_id: str) -> Product | None:
    return await _fetch_one(
        session,
        Product,
        "SELECT product_id, name, category, price, currency, active, updated_at FROM products WHERE product_id = $1",
        product_id,
    )


async def existing_products(session: AsyncSession, product_ids: Sequence[str]) -> set[str]:
    connection = await request_driver_connection(session)
    rows = await connection.fetch("SELECT product_id FROM products WHERE product_id = ANY($1::varchar[])", product_ids)
    return {r[0] for r in rows}


@dataclass(frozen=True, slots=True)
class InteractionRow:
    customer_id: str
    product_id: str
    quantity: int
    occurred_at: datetime


@dataclass
class Aggregate:
    purchases: set[datetime]
    quantity: int
    first_at: datetime
    last_at: datetime


_UPSERT_HISTORY = """
INSERT INTO customer_products AS cp (customer_id, product_id, purchases, quantity, first_at, last_at)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::int[], $4::bigint[], $5::timestamptz[], $6::timestamptz[])
ON CONFLICT (customer_id, product_id) DO UPDATE
   SET purchases = cp.purchases + excluded.purchases
                   - CASE WHEN excluded.first_at = cp.last_at OR excluded.last_at = cp.first_at THEN 1 ELSE 0 END,
       quantity = cp.quantity + excluded.quantity,
       first_at = least(cp.first_at, excluded.first_at),
       last_at = greatest(cp.last_at, excluded.last_at)
"""


async def insert_interactions(
    session: AsyncSession, rows: Sequence[InteractionRow], source: str | Sequence[str]
) -> None:
    """Append the raw lines and fold them into each (customer, product) history. `source` names where they
    came from: one for all, or one per row (a run of purchases, each its own).

    A purchase is one point in time: lines of the same customer and product at the same time count once (an
    invoice listing a product twice, or split across import batches)."""
    if not rows:
        return
    sources = [source] * len(rows) if isinstance(source, str) else source
    connection = await request_driver_connection(session)
    await connection.copy_records_to_table(
        "interactions",
        records=[
            (r.customer_id, r.product_id, r.quantity, r.occurred_at, s) for r, s in zip(rows, sources, strict=True)
        ],
        columns=["customer_id", "product_id", "quantity", "occurred_at", "source"],
    )
    grouped: dict[tuple[str, str], Aggregate] = {}
    for r in rows:
        key = (r.customer_id, r.product_id)
        entry = grouped.get(key)
        if entry is None:
            grouped[key] = Aggregate({r.occurred_at}, r.quantity, r.occurred_at, r.occurred_at)
        else:
            entry.purchases.add(r.occurred_at)
            entry.quantity += r.quantity
            entry.first_at = min(entry.first_at, r.occurred_at)
            entry.last_at = max(entry.last_at, r.occurred_at)
    # sorted keys: concurrent imports touching the same pairs lock them in one order (no deadlock)
    keys = sorted(grouped)
    await connection.execute(
        _UPSERT_HISTORY,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [len(grouped[k].purchases) for k in keys],
        [grouped[k].quantity for k in keys],
        [grouped[k].first_at for k in keys],
        [grouped[k].last_at for k in keys],
    )


async def put_preferences(
    session: AsyncSession, customer_id: str, categories: Sequence[str], excluded: Sequence[str]
) -> Preferences:
    connection = await request_driver_connection(session)
    row = await connection.fetchrow(
        "INSERT INTO preferences (customer_id, categories, excluded_categories) VALUES ($1, $2, $3)"
        " ON CONFLICT (customer_id) DO UPDATE SET categories = excluded.categories,"
        " excluded_categories = excluded.excluded_categories, updated_at = now()"
        " RETURNING customer_id, categories, excluded_categories, updated_at",
        customer_id,
        list(categories),
        list(excluded),
    )
    assert row is not None
    return Preferences(**row)


async def get_preferences(session: AsyncSession, customer_id: str) -> Preferences | None:
    return await _fetch_one(
        session,
        Preferences,
        "SELECT customer_id, categories, excluded_categories, updated_at FROM preferences WHERE customer_id = $1",
        customer_id,
    )


# Workers listen on this channel for training requests (and poll `training_requests`, should a notice be missed).
TRAINING_CHANNEL = "recommend_training"


async def request_training(session: AsyncSession) -> int:
    """Record a training request in the request's transaction and wake the workers when it commits (NOTIFY is
    delivered at commit, so a request replayed from its Idempotency-Key asks for nothing twice); returns the
    version the newest model will have reached once a worker trained for it."""
    connection = await request_driver_connection(session)
    version = await connection.fetchval(
        "INSERT INTO recommend.training_requests (version) VALUES (nextval('recommend.model_version_seq'))"
        " RETURNING version"
    )
    await connection.execute("SELECT pg_notify($1, $2)", TRAINING_CHANNEL, str(version))
    return int(version)


async def training_state(pool: asyncpg.Pool) -> tuple[int, int]:
    """The newest stored model's version and the newest training request's (0 when none)."""
    row = await pool.fetchrow(
        "SELECT coalesce((SELECT max(version) FROM recommend.models), 0),"
        " coalesce((SELECT max(version) FROM recommend.training_requests), 0)"
    )
    assert row is not None
    return int(row[0]), int(row[1])


# Serving reads: one statement, one round trip, on the serving pool (no transaction needed for one SELECT).
# Names are schema-qualified: behind PgBouncer in transaction mode the pool's connections carry no search_path.
# The weight of a bought product from the customer's feedback: 0 refunded, DETRACTOR_WEIGHT in a detractor's
# order, 1 otherwise (the same expression in training and serving).
DETRACTOR_WEIGHT = 0.3
_FEEDBACK_WEIGHT = f"""
(SELECT min(CASE f.kind WHEN 'refunded' THEN 0.0 ELSE {DETRACTOR_WEIGHT} END) FROM recommend.feedback f
  WHERE f.customer_id = {{customer}} AND f.product_id = {{product}})
"""

_SERVING_READ = f"""
SELECT 0 AS kind, product_id, purchases::bigint AS n, extract(epoch FROM last_at)::float8 AS last_at,
       extract(epoch FROM first_at)::float8 AS first_at, NULL::varchar[] AS cats, NULL::varchar[] AS excl,
       coalesce({_FEEDBACK_WEIGHT.format(customer="$1", product="cp.product_id")}, 1.0)::float8 AS weight
  FROM recommend.customer_products cp WHERE customer_id = $1
UNION ALL
SELECT 1, NULL, NULL, NULL, NULL, categories, excluded_categories, NULL
  FROM recommend.preferences WHERE customer_id = $1
UNION ALL
SELECT 2, NULL, (SELECT coalesce(max(seq), 0) FROM recommend.products), NULL, NULL, NULL, NULL, NULL
"""

TRAINING_READ = f"""
SELECT i.customer_id, i.product_id, extract(epoch FROM i.occurred_at)::float8, coalesce(f.weight, 1.0)::float8
  FROM recommend.interactions i
  LEFT JOIN (SELECT customer_id, product_id, min(CASE kind WHEN 'refunded' THEN 0.0 ELSE {DETRACTOR_WEIGHT} END)
               AS weight FROM recommend.feedback GROUP BY customer_id, product_id) f USING (customer_id, product_id)
"""


@dataclass(frozen=True, slots=True)
class ServingRead:
    history: list[tuple[str, int, float, float, float]]  # product, purchases, last, first, feedback weight
    categories: list[str]
    excluded: list[str]
    has_preferences: bool
    catalog_seq: int


async def read_for_serving(pool: asyncpg.Pool, customer_id: str) -> ServingRead:
    rows = await pool.fetch(_SERVING_READ, customer_id)
    history: list[tuple[str, int, float, float, float]] = []
    categories: list[str] = []
    excluded: list[str] = []
    has_preferences = False
    seq = 0
    for kind, product_id, n, last_at, first_at, cats, excl, weight in rows:
        if kind == 0:
            history.append((product_id, n, last_at, first_at, weight))
        elif kind == 1:
            has_preferences = True
            categories, excluded = list(cats), list(excl)
        else:
            seq = n
    return ServingRead(history, categories, excluded, has_preferences, seq)


@dataclass(frozen=True, slots=True)
class CatalogChange:
    product_id: str
    name: str
    category: str
    active: bool
    seq: int


async def catalog_since(pool: asyncpg.Pool, seq: int) -> list[CatalogChange]:
    """The products changed after catalog sequence `seq`, in sequence order."""
    rows = await pool.fetch(
        "SELECT product_id, name, category, active, seq FROM recommend.products WHERE seq > $1 ORDER BY seq", seq
    )
    return [CatalogChange(*row) for row in rows]


async def catalog_seq(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(seq), 0) FROM recommend.products"))


@dataclass(frozen=True, slots=True)
class NewestModel:
    version: int | None  # None: no model stored yet
    seconds: float | None  # how long its training took
    requested: int  # the newest training request's version (0 when none)


_NEWEST = """
SELECT m.version, extract(epoch FROM m.finished_at - m.started_at)::float8 AS seconds,
       coalesce((SELECT max(version) FROM recommend.training_requests), 0) AS requested
  FROM (SELECT 1) AS one
  LEFT JOIN (SELECT version, started_at, finished_at FROM recommend.models ORDER BY version DESC LIMIT 1) AS m ON true
"""


async def newest_model(pool: asyncpg.Pool) -> NewestModel:
    row = await pool.fetchrow(_NEWEST)
    assert row is not None
    return NewestModel(row[0], row[1], int(row[2]))


async def model_body(pool: asyncpg.Pool, version: int) -> bytes | None:
    body: bytes | None = await pool.fetchval("SELECT body FROM recommend.models WHERE version = $1", version)
    return body


async def stored_interactions(pool: asyncpg.Pool) -> int | None:
    """How many interactions the newest stored model was trained on (None: no model stored)."""
    value = await pool.fetchval("SELECT interactions FROM recommend.models ORDER BY version DESC LIMIT 1")
    return None if value is None else int(value)


# --- training, on the trainer's own connection (straight to the database: it holds a session-level lock) ---


async def take_training_lock(connection: asyncpg.Connection, key: int) -> None:
    """Wait for the training lock; it is held until the connection closes."""
    await connection.execute("SELECT pg_advisory_lock($1)", key)


async def latest_model_version(connection: asyncpg.Connection) -> int | None:
    value = await connection.fetchval("SELECT max(version) FROM models")
    return None if value is None else int(value)


async def reserved_model_version(connection: asyncpg.Connection) -> int:
    """The model version sequence's latest value: every training request made so far reserved at most it."""
    return int(await connection.fetchval("SELECT last_value FROM model_version_seq"))


async def store_model(
    connection: asyncpg.Connection,
    version: int,
    trained_by: str,
    started_at: datetime,
    interactions: int,
    body: bytes,
    kept: int,
) -> None:
    """Store a trained model, keep the newest `kept` (a look back after a bad training) and drop the training
    requests it covers, in one transaction."""
    async with connection.transaction():
        await connection.execute(
            "INSERT INTO models (version, trained_by, started_at, finished_at, interactions, body)"
            " VALUES ($1, $2, $3, now(), $4, $5)",
            version, trained_by, started_at, interactions, body,
        )  # fmt: skip
        await connection.execute(
            "DELETE FROM models WHERE version < (SELECT min(version) FROM"
            " (SELECT version FROM models ORDER BY version DESC LIMIT $1) AS kept)",
            kept,
        )
        await connection.execute("DELETE FROM training_requests WHERE version <= $1", version)


async def product_categories(connection: asyncpg.Connection) -> list[tuple[str, str]]:
    """Every product of the catalog with its category."""
    return [(row[0], row[1]) for row in await connection.fetch("SELECT product_id, category FROM products")]


async def new_model_version(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT nextval('recommend.model_version_seq')"))


async def interaction_count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM recommend.interactions"))


async def record_feedback(session: AsyncSession, customer_id: str, purchase_id: str, kind: str) -> int:
    """Mark the products of one purchase (recorded from its `purchase.created` event); returns how many."""
    connection = await request_driver_connection(session)
    result = await connection.execute(
        "INSERT INTO recommend.feedback (customer_id, product_id, kind, purchase_id)"
        " SELECT DISTINCT customer_id, product_id, $3, $2 FROM recommend.interactions"
        "  WHERE customer_id = $1 AND source = 'purchase:' || $2"
        " ON CONFLICT DO NOTHING",
        customer_id,
        purchase_id,
        kind,
    )
    return int(result.split()[-1])


async def add_preferred_categories(session: AsyncSession, customer_id: str, categories: Sequence[str]) -> None:
    """A survey answer: favour these categories (appended, at most 100 kept) and stop excluding them."""
    connection = await request_driver_connection(session)
    await connection.execute(
        """
        INSERT INTO recommend.preferences AS p (customer_id, categories, excluded_categories)
        VALUES ($1, $2::varchar[], '{}')
        ON CONFLICT (customer_id) DO UPDATE SET
          categories = (SELECT coalesce(array_agg(c ORDER BY n), '{}') FROM (
                          SELECT DISTINCT ON (lower(c)) c, n FROM unnest(p.categories || $2::varchar[])
                            WITH ORDINALITY AS u(c, n) ORDER BY lower(c), n) AS d WHERE n <= 100),
          excluded_categories = ARRAY(SELECT e FROM unnest(p.excluded_categories) AS e
                                       WHERE lower(e) <> ALL (SELECT lower(c) FROM unnest($2::varchar[]) AS c)),
          updated_at = now()
        """,
        customer_id,
        list(categories),
    )


async def purchase_products(session: AsyncSession, customer_id: str, purchase_id: str) -> int:
    connection = await request_driver_connection(session)
    return int(
        await connection.fetchval(
            "SELECT count(DISTINCT product_id) FROM recommend.interactions"
            " WHERE customer_id = $1 AND source = 'purchase:' || $2",
            customer_id,
            purchase_id,
        )
    )
