"""Reading the purchase history from the database, choosing the settings on it and training, in a form a child
process can run (:func:`train_from_database` is a plain function of picklable arguments returning a picklable
model)."""

from __future__ import annotations

import asyncio
from array import array
from dataclasses import dataclass, replace

import asyncpg
import numpy as np

from recommend import repository
from recommend.model import Params, train
from recommend.repository import TRAINING_READ
from recommend.store import dumps
from recommend.tuning import Purchases, aggregate, tune

__all__ = ["Connection", "load_purchases", "train_from_database"]

FETCH_ROWS = 50_000


@dataclass(frozen=True)
class Connection:
    dsn: str
    schema: str
    role: str | None

    async def connect(self) -> asyncpg.Connection:
        settings = {"search_path": self.schema}
        if self.role:
            settings["role"] = self.role
        return await asyncpg.connect(self.dsn, server_settings=settings)


async def load_purchases(connection: Connection) -> tuple[Purchases, list[str]]:
    """Every purchase line and the catalog, in one snapshot; read in batches (a million lines stay well under a
    gigabyte on the way)."""
    customers: list[str] = []
    products: list[str] = []
    times = array("d")
    weights = array("d")
    conn = await connection.connect()
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(TRAINING_READ)
            while batch := await cursor.fetch(FETCH_ROWS):
                for customer, product, at, weight in batch:
                    customers.append(customer)
                    products.append(product)
                    times.append(at)
                    weights.append(weight)
            catalog = await repository.product_categories(conn)
    finally:
        await conn.close()
    feedback = np.frombuffer(weights, dtype=np.float64)
    purchases = Purchases.from_rows(
        customers,
        products,
        np.frombuffer(times, dtype=np.float64),
        categories=dict(catalog),
        weight=feedback if (feedback != 1.0).any() else None,
    )
    return purchases, [product for product, _ in catalog]


def train_from_database(connection: Connection, version: int, params: Params, budget_seconds: float) -> bytes:
    """The new model, stored as bytes (recommend.store): what goes into the `models` table, and smaller to send
    back from the child process than the objects."""
    purchases, catalog = asyncio.run(load_purchases(connection))
    report = tune(purchases, budget_seconds=budget_seconds, base=params)
    model = train(aggregate(purchases), version=version, params=report.params, catalog=catalog)
    return dumps(replace(model, report=report.as_dict()))
