"""Seed the default roles, the first superuser, demo products and customers, idempotently:
running it twice leaves the same rows.

    uv run python scripts/seed.py [--products 50] [--customers 20]

Uses DATABASE_URL, else the embedded PostgreSQL (started and migrated first), as the app's role.
"""

import argparse
import asyncio

import asyncpg

from backoffice.audit import changes
from backoffice.auth.bootstrap import ensure_defaults
from backoffice.core.config import get_settings
from backoffice.core.database import Database, app_database_url, libpq_url

_CATEGORIES = ("Keyboard", "Mouse", "Monitor", "Headset", "Webcam", "Dock", "Cable", "Lamp")


async def seed_products(url: str, count: int) -> int:
    """Insert `count` demo products (DEMO-00001...), skipping SKUs that exist; return how many
    were new."""
    rows = [
        (
            f"DEMO-{number:05d}",
            f"{_CATEGORIES[number % len(_CATEGORIES)]} model {number}",
            f"{(number * 7.31) % 500 + 4.99:.2f}",
            (number * 13) % 250,
        )
        for number in range(1, count + 1)
    ]
    connection = await asyncpg.connect(libpq_url(url))
    try:
        result = await connection.fetchval(
            """
            WITH inserted AS (
                INSERT INTO products (sku, name, price, stock_quantity)
                SELECT sku, name, price::numeric, stock
                FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
                    AS t(sku, name, price, stock)
                ON CONFLICT ((lower((sku)::text))) DO NOTHING
                RETURNING 1
            )
            SELECT count(*) FROM inserted
            """,
            *(list(column) for column in zip(*rows, strict=True)),
        )
    finally:
        await connection.close()
    return int(result)


_STATUSES = ("lead", "active", "inactive")


async def seed_customers(url: str, count: int) -> int:
    """Insert `count` demo customers (demo-customer-N@example.com), skipping emails that exist;
    return how many were new."""
    rows = [
        (
            f"Demo customer {number}",
            f"demo-customer-{number}@example.com",
            f"Demo company {number % 7}",
            _STATUSES[number % len(_STATUSES)],
        )
        for number in range(1, count + 1)
    ]
    connection = await asyncpg.connect(libpq_url(url))
    try:
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
            *(list(column) for column in zip(*rows, strict=True)),
        )
    finally:
        await connection.close()
    return int(result)


async def main(products: int, customers: int) -> None:
    settings = get_settings()
    # Demo data is the app's business: written with the app's role, as the API would, and
    # the roles and superuser recorded in the audit trail as the API's writes are.
    url = await app_database_url(settings)
    database = Database.connect(url, settings, session_class=changes.session_class(settings))
    try:
        async with database.sessions.begin() as session:
            created = await ensure_defaults(session, settings)
    finally:
        await database.dispose()
    print(
        f"roles and superuser: created {', '.join(created)}"
        if created
        else "roles and superuser: up to date"
    )
    added = await seed_products(url, products)
    print(f"products: {added} added, {products - added} already there")
    added = await seed_customers(url, customers)
    print(f"customers: {added} added, {customers - added} already there")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=50, help="demo products to ensure")
    parser.add_argument("--customers", type=int, default=20, help="demo customers to ensure")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.products, arguments.customers))
