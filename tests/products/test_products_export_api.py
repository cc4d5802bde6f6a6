"""GET /products/export: the list's filters and sort, as a CSV file, streamed in batches."""

from decimal import Decimal

from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from backoffice.core.spreadsheet import EXPORT_BATCH_SIZE
from tests.support.factories import PRODUCTS, CreateProduct
from tests.support.http import assert_problem, walk_pages
from tests.support.spreadsheet import csv_header, csv_rows

EXPORT = f"{PRODUCTS}/export"


async def test_export_has_the_json_fields_as_header_and_the_filtered_sorted_rows(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    for price in ("30.00", "10.00", "20.00"):
        await create_product(price=price)
    await create_product(price="5.00", is_active=False)
    params = {"is_active": "true", "sort": "price"}

    response = await client.get(EXPORT, params=params)

    rows = csv_rows(response)
    listed = await walk_pages(client, PRODUCTS, params)
    assert [row["id"] for row in rows] == [str(item["id"]) for item in listed]
    assert [row["price"] for row in rows] == ["10.00", "20.00", "30.00"]
    assert csv_header(response) == list(listed[0])  # the JSON API's fields, in its order
    assert rows[0]["is_active"] == "true"
    assert rows[0]["description"] == ""  # null
    assert rows[0]["created_at"] == listed[0]["created_at"]
    assert response.headers["content-disposition"].startswith('attachment; filename="products-')


async def test_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    texts = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTab", "\rCR", "'=quoted"]
    for number, value in enumerate(texts):
        await create_product(sku=f"F-{number}", name=f"N {number}", description=value)
    await create_product(sku="F-safe", name="A - B", description="fine = fine")

    rows = {row["sku"]: row for row in csv_rows(await client.get(EXPORT))}

    assert [rows[f"F-{n}"]["description"] for n in range(len(texts))] == [
        f"'{value}" for value in texts
    ]
    assert rows["F-safe"]["description"] == "fine = fine"
    assert rows["F-safe"]["name"] == "A - B"


async def test_export_streams_every_row_once_across_batches(
    client: AsyncClient, connection: AsyncConnection
) -> None:
    """More rows than a batch, with ties on the sort key: each row once, in the list's order."""
    total = EXPORT_BATCH_SIZE * 2 + 7
    await connection.execute(
        text(
            "INSERT INTO products (sku, name, price, stock_quantity) "
            "SELECT 'B-' || n, 'Same name', (n % 3)::numeric, n FROM generate_series(1, :total) n"
        ),
        {"total": total},
    )

    rows = csv_rows(await client.get(EXPORT, params={"sort": "-price"}))

    assert len(rows) == total
    assert len({row["id"] for row in rows}) == total
    keys = [(Decimal(row["price"]), int(row["id"])) for row in rows]
    assert keys == sorted(keys, reverse=True)


async def test_an_empty_export_is_the_header_alone(client: AsyncClient) -> None:
    response = await client.get(EXPORT, params={"q": "nothing matches this"})

    assert csv_rows(response) == []
    assert csv_header(response)[:3] == ["id", "sku", "name"]


async def test_export_takes_the_filters_but_no_page_parameters(client: AsyncClient) -> None:
    problem = assert_problem(await client.get(EXPORT, params={"limit": "5"}), 422)

    assert [error["field"] for error in problem["errors"]] == ["query.limit"]
    assert_problem(await client.get(EXPORT, params={"min_price": "-1"}), 422)


async def test_export_does_not_shadow_the_product_routes(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    product = await create_product()

    assert (await client.get(f"{PRODUCTS}/{product['id']}")).status_code == 200
    for method, path, allowed in [
        ("PATCH", EXPORT, "GET"),
        ("DELETE", EXPORT, "GET"),
        ("GET", f"{PRODUCTS}/import", "POST"),
        ("DELETE", f"{PRODUCTS}/import", "POST"),
    ]:
        refused = await client.request(method, path)  # not an id: a resource of its own
        assert_problem(refused, 405)
        assert refused.headers["allow"] == allowed
