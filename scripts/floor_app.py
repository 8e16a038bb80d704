"""The floor for points redemptions (issue 18): the same endpoint with nothing of the kit. FastAPI, a pydantic body,
an asyncpg pool, the same single statement the points service runs (`points_redeem`), the same uvicorn settings;
no middleware, no session, no idempotency, no logging, no metrics.

    python -m scripts.floor_app PORT DATABASE_URL
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
import uvicorn
from fastapi import FastAPI, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

REDEEM = "SELECT r_outcome, r_transaction_id, r_points, r_balance FROM points_redeem($1, $2, $3, $4)"


class Redemption(BaseModel):
    points: Annotated[int, Field(gt=0, lt=2**53)]
    reference: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None


def create_app(database_url: str) -> FastAPI:
    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(
            database_url, min_size=20, max_size=20, server_settings={"search_path": "points"}
        )
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/customers/{customer_id}/points/redemptions", status_code=201)
    async def redeem(customer_id: Annotated[str, Path(max_length=64)], body: Redemption) -> JSONResponse:
        assert pool is not None
        async with pool.acquire() as connection:
            row = await connection.fetchrow(REDEEM, customer_id, body.points, body.reference, body.description or "")
        if row[0] == "insufficient":
            return JSONResponse({"code": "insufficient_points", "balance": row[3]}, status_code=409)
        return JSONResponse({"transaction_id": row[1], "points": row[2], "balance": row[3]}, status_code=201)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    port, database_url = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(
        create_app(database_url), host="127.0.0.1", port=port, log_config=None, access_log=False, timeout_keep_alive=65
    )


if __name__ == "__main__":
    main()
