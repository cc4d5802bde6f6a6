"""scripts/seed.py's inserts, which `task seed` and the benchmark share: idempotent, and the
rows they write are the ones asked for."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from scripts.bench.seeding import bench_customers, bench_products
from scripts.seed import demo_customers, demo_products, insert_customers, insert_products
from tests.support.database import rolled_back_connection


@pytest.fixture
async def rolled_back(app_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the app's role whose every write is undone."""
    async with rolled_back_connection(app_database_url) as connection:
        yield connection


async def test_demo_products_are_inserted_once(rolled_back: asyncpg.Connection) -> None:
    assert await insert_products(rolled_back, demo_products(3)) == 3
    assert await insert_products(rolled_back, demo_products(5)) == 2

    rows = await rolled_back.fetch(
        "SELECT sku, name, price::text, stock_quantity, description,"
        " created_at = now() AND updated_at = now() AS now"
        " FROM products WHERE sku LIKE 'DEMO-%' ORDER BY sku"
    )
    assert [tuple(row) for row in rows] == [
        (product.sku, product.name, product.price, product.stock_quantity, None, True)
        for product in demo_products(5)
    ]


async def test_a_taken_sku_or_email_is_skipped_whatever_its_case(
    rolled_back: asyncpg.Connection,
) -> None:
    await insert_products(rolled_back, demo_products(1))
    await insert_customers(rolled_back, demo_customers(1))

    shouting = [demo_products(1)[0]._replace(sku="demo-00001")]
    assert await insert_products(rolled_back, shouting) == 0
    loud = [demo_customers(1)[0]._replace(email="DEMO-CUSTOMER-1@EXAMPLE.COM")]
    assert await insert_customers(rolled_back, loud) == 0
    assert await insert_customers(rolled_back, demo_customers(2)) == 1


async def test_an_empty_batch_inserts_nothing(rolled_back: asyncpg.Connection) -> None:
    assert await insert_products(rolled_back, []) == 0
    assert await insert_customers(rolled_back, []) == 0


async def test_bench_rows_keep_their_description_and_creation_times(
    rolled_back: asyncpg.Connection,
) -> None:
    products = bench_products(3)
    assert await insert_products(rolled_back, products) == 3
    assert await insert_customers(rolled_back, bench_customers(3)) == 3

    rows = await rolled_back.fetch(
        "SELECT sku, description, created_at, updated_at FROM products"
        " WHERE sku LIKE 'BENCH-%' ORDER BY id"
    )
    assert [(row["sku"], row["description"]) for row in rows] == [
        (product.sku, product.description) for product in products
    ]
    times = [row["created_at"] for row in rows]
    assert times == [row["updated_at"] for row in rows] == [p.created_at for p in products]
    assert times == sorted(times)
    assert times[-1] <= datetime.now(UTC)
    statuses = await rolled_back.fetch(
        "SELECT status::text FROM customers WHERE email LIKE '%@bench.example.com' ORDER BY id"
    )
    assert [row["status"] for row in statuses] == ["active", "inactive", "lead"]
