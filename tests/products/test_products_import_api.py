"""POST /products/import: a CSV file of products, matched by SKU, all rows or none."""

from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.products.models import Product
from tests.support.audit import changes_of
from tests.support.database import stored
from tests.support.factories import PRODUCTS, CreateProduct
from tests.support.http import api_client, assert_problem
from tests.support.spreadsheet import CSV_HEADERS, csv_file, csv_rows
from tests.support.users import tokens_for, user_with_grants

IMPORT = f"{PRODUCTS}/import"
HEADER = ("sku", "name", "price", "stock_quantity", "is_active", "description")


async def send(client: AsyncClient, body: bytes, *, dry_run: bool = False) -> Response:
    params = {"dry_run": "true"} if dry_run else {}
    return await client.post(IMPORT, content=body, headers=CSV_HEADERS, params=params)


async def product_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Product)) or 0)


async def by_sku(session: AsyncSession, sku: str) -> Product | None:
    result = await session.execute(
        select(Product)
        .where(func.lower(Product.sku) == sku.lower())
        .execution_options(populate_existing=True)
    )
    return result.scalars().one_or_none()


def fields(problem: dict[str, Any]) -> list[str]:
    return [error["field"] for error in problem["errors"]]


async def test_a_dry_run_answers_what_would_change_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, create_product: CreateProduct
) -> None:
    known = await create_product(sku="KB-1", price="10.00")
    await create_product(sku="KB-2", name="Same", price="5.00", stock_quantity=3)
    body = csv_file(
        HEADER,
        [
            ("kb-1", "", "12.50", "", "", ""),  # matched whatever the case; price changes
            ("KB-2", "Same", "5", "3", "", ""),  # nothing changes
            ("NEW-1", "A new one", "7.25", "4", "false", "Fresh"),
        ],
    )

    response = await send(client, body, dry_run=True)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "dry_run": True,
        "rows": 3,
        "created": 1,
        "updated": 1,
        "unchanged": 1,
        "created_skus": ["NEW-1"],
        "updated_skus": ["KB-1"],
    }
    assert await product_count(session) == 2
    product = await stored(session, Product, known["id"])
    assert product is not None
    assert (product.price, product.version) == (Decimal("10.00"), 1)


async def test_an_import_creates_and_updates_in_one_go_each_change_audited(
    client: AsyncClient, session: AsyncSession, create_product: CreateProduct, superuser: User
) -> None:
    known = await create_product(sku="KB-1", name="Keyboard", price="10.00", stock_quantity=1)
    body = csv_file(
        HEADER, [("KB-1", "", "12.50", "9", "", ""), ("NEW-1", "New", "7.25", "", "", "")]
    )

    response = await send(client, body)

    assert response.status_code == 200, response.text
    assert response.json()["created_skus"] == ["NEW-1"]
    assert response.json()["updated_skus"] == ["KB-1"]
    updated = await stored(session, Product, known["id"])
    assert updated is not None
    # Only the cells given change; the stored SKU's spelling and name stay.
    assert (updated.name, updated.price, updated.stock_quantity) == (
        "Keyboard",
        Decimal("12.50"),
        9,
    )
    assert updated.version == 2
    created = await by_sku(session, "NEW-1")
    assert created is not None
    assert (created.price, created.stock_quantity, created.is_active) == (Decimal("7.25"), 0, True)
    update_change = (await changes_of(session, "product", known["id"]))[-1]
    assert update_change.action == "update"
    assert update_change.new_values == {"price": "12.50", "stock_quantity": 9}
    assert update_change.actor_user_id == superuser.id
    (insert_change,) = await changes_of(session, "product", created.id)
    assert insert_change.action == "insert"


async def test_one_bad_row_imports_nothing_and_every_bad_cell_is_named_by_row_and_column(
    client: AsyncClient, session: AsyncSession, create_product: CreateProduct
) -> None:
    await create_product(sku="KB-1")
    body = (
        b"sku,name,price,stock_quantity,is_active\r\n"
        b"GOOD-1,Fine,1.00,1,true\r\n"  # row 2
        b"\r\n"  # row 3: blank, still counted, as a spreadsheet numbers it
        b"BAD-1,,1.001,-1,maybe\r\n"  # row 4: a new product without a name; three bad cells
        b'"BAD-2","two\nlines",x,,\r\n'  # row 5 spans two lines: one row; the price is bad
        b",No SKU,1.00,,\r\n"  # row 6
        b"kb-1,,,,\r\n"  # row 7: fine, nothing to change
        b"good-1,Again,1.00,,\r\n"  # row 8: the SKU of row 2, in another case
        b"a,b,c,d,e,f\r\n"  # row 9: a cell more than the header
    )

    response = await send(client, body)

    problem = assert_problem(response, 422, "invalid-input")
    assert fields(problem) == [
        "body.4.is_active",
        "body.4.name",
        "body.4.price",
        "body.4.stock_quantity",
        "body.5.price",
        "body.6.sku",
        "body.8.sku",
        "body.9",
    ]
    assert "row 2 already" in problem["errors"][6]["message"]
    assert await product_count(session) == 1
    assert_problem(await send(client, body, dry_run=True), 422)  # a dry run finds the same


async def test_a_new_product_must_have_what_post_requires(client: AsyncClient) -> None:
    response = await send(client, csv_file(("sku", "price"), [("NEW-1", "3.00")]))

    problem = assert_problem(response, 422)
    assert problem["errors"] == [
        {"field": "body.2.name", "message": "Field required", "type": "missing"}
    ]


@pytest.mark.parametrize(
    ("header", "field", "kind"),
    [
        (b"sku,name,colour", "body.1.colour", "unknown_column"),
        (b"name,price", "body.1.sku", "missing"),
        (b"sku,name,name", "body.1.name", "duplicate_column"),
    ],
)
async def test_unknown_missing_and_repeated_columns_are_errors_of_the_header_row(
    client: AsyncClient, header: bytes, field: str, kind: str
) -> None:
    problem = assert_problem(await send(client, header + b"\r\nA-1,x,y\r\n"), 422)

    assert [(error["field"], error["type"]) for error in problem["errors"]] == [(field, kind)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"sku,name,price\r\nA-1,Caf\xe9,1.00\r\n", "body"),  # Latin-1, not UTF-8
        (b"sku,name,price\r\nA-1,\xed\xa0\x80,1.00\r\n", "body"),  # a lone surrogate
        (b"sku,name,price\r\nA-1,N\x00L,1.00\r\n", "body.2.name"),
        (b"", "body.1"),
        (b'sku,name,price\r\nA-1,"open quote,1.00\r\n', "body.2"),
    ],
    ids=["latin-1", "surrogate", "nul", "empty", "broken-quoting"],
)
async def test_a_file_that_cannot_be_read_or_stored_is_a_422(
    client: AsyncClient, session: AsyncSession, body: bytes, field: str
) -> None:
    problem = assert_problem(await send(client, body), 422)

    assert fields(problem) == [field]
    assert await product_count(session) == 0


async def test_a_byte_order_mark_and_an_exports_own_columns_are_accepted(
    client: AsyncClient, session: AsyncSession
) -> None:
    body = b"\xef\xbb\xbf" + csv_file(
        ("id", "sku", "name", "price", "created_at", "updated_at", "version"),
        [("999", "A-1", "Caf\u00e9 \u2615", "1.00", "2020-01-01", "whenever", "")],
    )

    response = await send(client, body)

    assert response.status_code == 200, response.text
    created = await by_sku(session, "A-1")
    assert created is not None
    assert created.name == "Caf\u00e9 \u2615"
    assert created.id != 999


async def test_an_export_imported_back_changes_nothing_formulas_included(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    await create_product(sku="F-1", name="=1+1", description="'=quoted")
    await create_product(sku="F-2", name="-minus", description="\ttab")
    exported = await client.get(f"{PRODUCTS}/export")
    assert csv_rows(exported)[0]["name"].startswith("'")

    response = await send(client, exported.content)

    assert response.status_code == 200, response.text
    assert (response.json()["unchanged"], response.json()["updated"]) == (2, 0)


async def test_a_row_whose_product_changed_since_the_export_is_refused(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    product = await create_product(sku="KB-1", price="10.00")
    exported = (await client.get(f"{PRODUCTS}/export")).content.decode()
    changed = await client.patch(f"{PRODUCTS}/{product['id']}", json={"stock_quantity": 50})
    assert changed.status_code == 200

    response = await send(client, exported.replace("10.00", "11.00").encode())

    problem = assert_problem(response, 422)
    assert [(e["field"], e["type"]) for e in problem["errors"]] == [
        ("body.2.version", "stale_version")
    ]


async def test_only_text_csv_is_accepted(client: AsyncClient) -> None:
    body = csv_file(("sku", "name", "price"), [("A-1", "x", "1.00")])

    json_body = await client.post(IMPORT, json={"sku": "A-1"})
    latin = await client.post(
        IMPORT, content=body, headers={"Content-Type": "text/csv; charset=latin-1"}
    )

    assert_problem(json_body, 415, "unsupported-media-type")
    assert_problem(latin, 415, "unsupported-media-type")


async def test_the_import_has_its_own_body_limit(client: AsyncClient, settings: Settings) -> None:
    """Bigger than any JSON body may be, and still bounded."""
    rows = [(f"BIG-{n}", "x" * 40, "1.00") for n in range(25_000)]
    big = csv_file(("sku", "name", "price"), rows)
    assert settings.max_request_body_bytes < len(big) < settings.csv_import_max_bytes

    accepted = await send(client, big, dry_run=True)
    too_big = await send(client, b"sku\r\n" + b"A" * settings.csv_import_max_bytes)

    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["created"] == len(rows)
    assert_problem(too_big, 413, "content-too-large")


async def test_creating_products_by_import_needs_products_create(
    app: Any, session: AsyncSession, settings: Settings, create_product: CreateProduct
) -> None:
    await create_product(sku="KB-1")
    updater = await user_with_grants(session, {"products": ["update"]})
    token = (await tokens_for(session, settings, updater)).access_token
    updates = csv_file(("sku", "price"), [("KB-1", "3.00")])
    creates = csv_file(("sku", "name", "price"), [("KB-1", "x", "3.00"), ("NEW-1", "y", "1.00")])

    async with api_client(app, token) as client:
        allowed = await send(client, updates)
        refused = await send(client, creates, dry_run=True)

    assert allowed.status_code == 200, allowed.text
    problem = assert_problem(refused, 403, "forbidden")
    assert "products:create" in problem["detail"]
