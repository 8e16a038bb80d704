"""Reading the training set from the database and training, in a form a child process can run
(:func:`train_from_database` is a plain function of picklable arguments returning a picklable model)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import numpy as np

from recommend.model import Model, Params, TrainingSet, train

__all__ = ["Connection", "load_training_set", "train_from_database"]


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


async def load_training_set(connection: Connection) -> tuple[TrainingSet, list[str]]:
    conn = await connection.connect()
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            pairs = await conn.fetch(
                "SELECT customer_id, product_id, purchases, extract(epoch FROM last_at)::float8,"
                " extract(epoch FROM first_at)::float8 FROM customer_products"
            )
            catalog = await conn.fetch("SELECT product_id, category FROM products")
            interactions = await conn.fetchval("SELECT count(*) FROM interactions")
    finally:
        await conn.close()
    n = len(pairs)
    data = TrainingSet(
        customers=[r[0] for r in pairs],
        products=[r[1] for r in pairs],
        purchases=np.fromiter((r[2] for r in pairs), np.int64, count=n),
        last_at=np.fromiter((r[3] for r in pairs), np.float64, count=n),
        first_at=np.fromiter((r[4] for r in pairs), np.float64, count=n),
        interactions=int(interactions),
        categories={r[0]: r[1] for r in catalog},
    )
    return data, [r[0] for r in catalog]


def train_from_database(connection: Connection, version: int, params: Params) -> Model:
    data, catalog = asyncio.run(load_training_set(connection))
    return train(data, version=version, params=params, catalog=catalog)
