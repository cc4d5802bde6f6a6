"""Review finding on GET /products/export: the export reads in keyset batches, each on a
connection of its own, so it is no snapshot: a row whose sort key moves behind the cursor
while the file streams is left out (one that moves ahead is written twice)."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from backoffice.core import repository
from backoffice.core.database import ReadConnection
from tests.support.factories import PRODUCTS, CreateProduct
from tests.support.spreadsheet import csv_rows


@pytest.mark.xfail(
    strict=True,
    reason="design choice left to the lead: one snapshot for the whole export (REPEATABLE "
    "READ, or pg_export_snapshot) holds a connection while the file streams at the "
    "client's pace, which the export avoids on purpose",
)
async def test_a_product_edited_during_an_export_is_in_it_once(
    client: AsyncClient,
    connection: AsyncConnection,
    create_product: CreateProduct,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    products = [await create_product(price=f"{price}.00") for price in (10, 20, 30, 40, 50)]
    last = products[-1]
    monkeypatch.setattr(repository, "EXPORT_BATCH_SIZE", 2)
    original = ReadConnection.fetch_statement
    calls = 0

    async def fetch_then_edit(self: ReadConnection, statement: Any) -> Any:
        nonlocal calls
        rows = await original(self, statement)
        calls += 1
        if calls == 1:  # someone reprices the last product while the first batch is sent
            await connection.execute(
                text("UPDATE products SET price = 15, version = version + 1 WHERE id = :id"),
                {"id": last["id"]},
            )
        return rows

    monkeypatch.setattr(ReadConnection, "fetch_statement", fetch_then_edit)

    rows = csv_rows(await client.get(f"{PRODUCTS}/export", params={"sort": "price"}))

    assert sorted(int(row["id"]) for row in rows) == sorted(p["id"] for p in products)
