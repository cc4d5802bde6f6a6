"""Seed the default roles, the first superuser, demo products and customers, idempotently:
running it twice leaves the same rows.

    uv run python scripts/seed.py [--products 50] [--customers 20]

Uses DATABASE_URL, else the embedded PostgreSQL (started and migrated first), as the app's role.

Its inserts are also the benchmark's (`scripts/bench/seeding.py`), with the bench's own rows:
one seeding code. It imports nothing from the bench: the Docker image ships this file alone.
"""

import argparse
import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg

from backoffice.audit import changes
from backoffice.auth.bootstrap import ensure_defaults
from backoffice.core.config import Settings, get_settings
from backoffice.core.database import Database, app_database_url, libpq_url

_CATEGORIES = ("Keyboard", "Mouse", "Monitor", "Headset", "Webcam", "Dock", "Cable", "Lamp")
CUSTOMER_STATUSES = ("lead", "active", "inactive")


class NewProduct(NamedTuple):
    sku: str
    name: str
    price: str  # exact decimal text, as the API takes it
    stock_quantity: int
    description: str | None = None
    created_at: datetime | None = None  # None: now(), the column's default (updated_at too)


class NewCustomer(NamedTuple):
    name: str
    email: str
    company: str
    status: str  # a customer_status label


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """The rows as one list per column, for unnest(): an empty batch still sends every array."""
    return [[row[index] for row in rows] for index in range(width)]


async def insert_products(connection: asyncpg.Connection, products: Sequence[NewProduct]) -> int:
    """Insert the products whose SKU is not taken yet (case-insensitively); return how many
    were new."""
    result = await connection.fetchval(
        """
        WITH inserted AS (
            INSERT INTO products (sku, name, description, price, stock_quantity, created_at,
                                  updated_at)
            SELECT sku, name, description, price::numeric, stock,
                   coalesce(created_at, now()), coalesce(created_at, now())
            FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[],
                        $6::timestamptz[])
                AS t(sku, name, price, stock, description, created_at)
            ON CONFLICT ((lower((sku)::text))) DO NOTHING
            RETURNING 1
        )
        SELECT count(*) FROM inserted
        """,
        *_columns(products, len(NewProduct._fields)),
    )
    return int(result)


async def insert_customers(connection: asyncpg.Connection, customers: Sequence[NewCustomer]) -> int:
    """Insert the customers whose email is not taken yet (case-insensitively); return how many
    were new."""
    result = await connection.fetchval(
        """
        WITH inserted AS (
            INSERT INTO customers (name, email, company, status)
            SELECT name, email, company, status::customer_status
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                AS t(name, email, company, status)
            ON CONFLICT ((lower((email)::text))) DO NOTHING
            RETURNING 1
        )
        SELECT count(*) FROM inserted
        """,
        *_columns(customers, len(NewCustomer._fields)),
    )
    return int(result)


async def ensure_roles_and_superuser(url: str, settings: Settings) -> list[str]:
    """The default roles and the first superuser of `settings`, where missing (an existing
    user is never changed); return what was created."""
    database = Database.connect(url, settings, session_class=changes.session_class(settings))
    try:
        async with database.sessions.begin() as session:
            return await ensure_defaults(session, settings)
    finally:
        await database.dispose()


def demo_products(count: int) -> list[NewProduct]:
    """DEMO-00001...: a category's model, a price and a stock derived from the number."""
    return [
        NewProduct(
            sku=f"DEMO-{number:05d}",
            name=f"{_CATEGORIES[number % len(_CATEGORIES)]} model {number}",
            price=f"{(number * 7.31) % 500 + 4.99:.2f}",
            stock_quantity=(number * 13) % 250,
        )
        for number in range(1, count + 1)
    ]


def demo_customers(count: int) -> list[NewCustomer]:
    return [
        NewCustomer(
            name=f"Demo customer {number}",
            email=f"demo-customer-{number}@example.com",
            company=f"Demo company {number % 7}",
            status=CUSTOMER_STATUSES[number % len(CUSTOMER_STATUSES)],
        )
        for number in range(1, count + 1)
    ]


async def main(products: int, customers: int) -> None:
    settings = get_settings()
    # Demo data is the app's business: written with the app's role, as the API would, and
    # the roles and superuser recorded in the audit trail as the API's writes are.
    url = await app_database_url(settings)
    created = await ensure_roles_and_superuser(url, settings)
    print(
        f"roles and superuser: created {', '.join(created)}"
        if created
        else "roles and superuser: up to date"
    )
    connection = await asyncpg.connect(libpq_url(url))
    try:
        added = await insert_products(connection, demo_products(products))
        print(f"products: {added} added, {products - added} already there")
        added = await insert_customers(connection, demo_customers(customers))
        print(f"customers: {added} added, {customers - added} already there")
    finally:
        await connection.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=50, help="demo products to ensure")
    parser.add_argument("--customers", type=int, default=20, help="demo customers to ensure")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.products, arguments.customers))
