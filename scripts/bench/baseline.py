"""The floor the bench measures the API against: the same row read with no framework.

A bare Starlette app on an asyncpg pool, served like the API (uvicorn, uvloop, httptools, no
access log, the same number of workers), answering `GET /products/{id}` with the same columns
the API returns. Whatever the API costs above this is FastAPI, validation, SQLAlchemy and our
middleware.

    BENCH_DATABASE_URL=postgresql://... uv run python -m scripts.bench.baseline --port 8001
"""

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .plan import DB_POOL_SIZE

DSN_ENV = "BENCH_DATABASE_URL"
MAX_ID = 2**31 - 1

PRODUCT_QUERY = (
    "SELECT id, sku, name, description, price, stock_quantity, is_active, created_at, "
    "updated_at, version FROM products WHERE id = $1"
)
NOT_FOUND = orjson.dumps({"status": 404, "title": "Not Found"})


def _json_default(value: Any) -> str:
    return str(value)  # Decimal, as the API returns prices: an exact string


async def get_product(request: Request) -> Response:
    raw_id: str = request.path_params["product_id"]
    product_id = int(raw_id) if raw_id.isdigit() else 0
    if not 0 < product_id <= MAX_ID:
        return Response(NOT_FOUND, status_code=404, media_type="application/json")
    pool: asyncpg.Pool = request.app.state.pool
    row = await pool.fetchrow(PRODUCT_QUERY, product_id)
    if row is None:
        return Response(NOT_FOUND, status_code=404, media_type="application/json")
    body = orjson.dumps(dict(row), default=_json_default)
    return Response(body, media_type="application/json")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(
        # The API's pool exactly (per worker, no overflow): a bigger one would flatter the
        # baseline, and with the API servers' pools exceed what PostgreSQL accepts.
        os.environ[DSN_ENV],
        min_size=DB_POOL_SIZE,
        max_size=DB_POOL_SIZE,
    )
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


def create_app() -> Starlette:
    return Starlette(
        routes=[Route("/products/{product_id}", get_product, methods=["GET"])],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if DSN_ENV not in os.environ:
        parser.error(f"set {DSN_ENV} to the database's libpq URL")
    uvicorn.run(
        "scripts.bench.baseline:create_app",
        factory=True,
        # The project's root, where `scripts` is found: each worker imports the app anew.
        app_dir=str(Path(__file__).resolve().parents[2]),
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
