"""Review findings on POST /products/import: hostile cells are a 422 naming the cell."""

import pytest
from httpx import AsyncClient

from tests.support.factories import PRODUCTS, CreateProduct
from tests.support.http import assert_problem
from tests.support.spreadsheet import CSV_HEADERS, csv_file

IMPORT = f"{PRODUCTS}/import"


# str.isdigit() is true of each, but int() takes none (or reads another script's digits).
@pytest.mark.parametrize("version", ["²", "①", "\u0661", "9" * 5000])
async def test_a_version_in_other_digits_is_a_422_naming_the_cell(
    client: AsyncClient, create_product: CreateProduct, version: str
) -> None:
    await create_product(sku="KB-1", price="10.00")
    body = csv_file(("sku", "price", "version"), [("KB-1", "12.00", version)])

    response = await client.post(IMPORT, content=body, headers=CSV_HEADERS)

    problem = assert_problem(response, 422)
    assert [error["field"] for error in problem["errors"]] == ["body.2.version"]
