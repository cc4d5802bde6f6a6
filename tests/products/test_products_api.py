"""The products API: creating, changing and deleting a product, and adjusting its stock. ETag,
If-Match, 404 and id range: tests/core/test_versioned_resources_api.py."""

from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.core.schemas import MAX_INT4
from backoffice.products.models import Product
from tests.support.database import stored
from tests.support.factories import PRODUCTS, CreateProduct, product_payload
from tests.support.http import assert_problem

# --- create ---------------------------------------------------------------------------------


async def test_create_product_returns_201_with_location_etag_and_body(
    client: AsyncClient, session: AsyncSession
) -> None:
    payload = product_payload(sku="KB-1", price="89.90", description="Brown switches")

    response = await client.post(PRODUCTS, json=payload)

    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"{PRODUCTS}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert body | payload == body  # every field sent comes back unchanged
    assert body["version"] == 1
    assert body["is_active"] is True
    product = await stored(session, Product, body["id"])
    assert product is not None
    assert product.price == Decimal("89.90")


@pytest.mark.parametrize("duplicate", ["kb-dup", "KB-DUP", "Kb-Dup"])
async def test_create_product_with_duplicate_sku_in_any_case_returns_409(
    client: AsyncClient, create_product: CreateProduct, duplicate: str
) -> None:
    await create_product(sku="kb-dup")

    response = await client.post(PRODUCTS, json=product_payload(sku=duplicate))

    problem = assert_problem(response, 409, "conflict")
    assert "SKU" in problem["detail"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"price": "-0.01"}, "body.price"),
        ({"price": "1.001"}, "body.price"),
        ({"price": "NaN"}, "body.price"),
        ({"price": "12345678901.00"}, "body.price"),
        ({"stock_quantity": -1}, "body.stock_quantity"),
        ({"stock_quantity": "5"}, "body.stock_quantity"),
        ({"stock_quantity": 2**31}, "body.stock_quantity"),
        ({"is_active": "yes"}, "body.is_active"),
        ({"name": ""}, "body.name"),
        ({"name": "   "}, "body.name"),
        ({"name": "x" * 201}, "body.name"),
        ({"sku": "has space"}, "body.sku"),
        ({"sku": "x" * 65}, "body.sku"),
        ({"id": 99}, "body.id"),
        ({"version": 7}, "body.version"),
        ({"created_at": "2020-01-01T00:00:00Z"}, "body.created_at"),
    ],
)
async def test_create_product_with_invalid_field_returns_422_naming_it(
    client: AsyncClient, session: AsyncSession, overrides: dict[str, Any], field: str
) -> None:
    response = await client.post(PRODUCTS, json=product_payload(**overrides))

    problem = assert_problem(response, 422, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}
    assert (await session.execute(select(Product))).first() is None


async def test_create_product_without_required_fields_lists_each_one(client: AsyncClient) -> None:
    response = await client.post(PRODUCTS, json={})

    problem = assert_problem(response, 422)
    assert {error["field"] for error in problem["errors"]} == {
        "body.sku",
        "body.name",
        "body.price",
    }


async def test_create_product_with_malformed_json_returns_422(client: AsyncClient) -> None:
    response = await client.post(
        PRODUCTS, content=b'{"sku": ', headers={"content-type": "application/json"}
    )

    assert_problem(response, 422)


async def test_create_product_with_huge_body_returns_413(client: AsyncClient) -> None:
    response = await client.post(PRODUCTS, json=product_payload(description="x" * 2_000_000))

    assert_problem(response, 413)


# --- update ---------------------------------------------------------------------------------


async def test_patch_product_changes_only_the_fields_sent_and_bumps_version(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    created = await create_product(description="before")

    response = await client.patch(
        f"{PRODUCTS}/{created['id']}", json={"name": "Renamed", "price": 12.5}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Renamed"
    assert body["price"] == "12.50"
    assert body["description"] == "before"
    assert body["sku"] == created["sku"]
    assert body["version"] == 2
    assert response.headers["etag"] == '"2"'


@pytest.mark.parametrize(
    "body",
    [{"name": None}, {"price": None}, {"sku": None}, {"version": 5}, {"id": 3}, {"price": "-1"}],
)
async def test_patch_product_with_invalid_body_returns_422(
    client: AsyncClient, create_product: CreateProduct, body: dict[str, Any]
) -> None:
    created = await create_product()

    response = await client.patch(f"{PRODUCTS}/{created['id']}", json=body)

    assert_problem(response, 422)


async def test_patch_product_description_to_null_clears_it(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    created = await create_product(description="to clear")

    response = await client.patch(f"{PRODUCTS}/{created['id']}", json={"description": None})

    assert response.status_code == 200
    assert response.json()["description"] is None


async def test_patch_product_to_a_taken_sku_returns_409(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    await create_product(sku="TAKEN-1")
    other = await create_product()

    response = await client.patch(f"{PRODUCTS}/{other['id']}", json={"sku": "taken-1"})

    assert_problem(response, 409, "conflict")


# --- delete ---------------------------------------------------------------------------------


# --- stock ----------------------------------------------------------------------------------


async def test_stock_adjustment_adds_and_removes_units(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    created = await create_product(stock_quantity=5)
    url = f"{PRODUCTS}/{created['id']}/stock-adjustments"

    added = await client.post(url, json={"delta": 10})
    removed = await client.post(url, json={"delta": -15})

    assert added.status_code == 200
    assert added.json()["stock_quantity"] == 15
    assert removed.json()["stock_quantity"] == 0
    assert removed.json()["version"] == 3
    assert removed.headers["etag"] == '"3"'


async def test_stock_adjustment_below_zero_returns_409_and_keeps_stock(
    client: AsyncClient, session: AsyncSession, create_product: CreateProduct
) -> None:
    created = await create_product(stock_quantity=2)

    response = await client.post(
        f"{PRODUCTS}/{created['id']}/stock-adjustments", json={"delta": -3}
    )

    problem = assert_problem(response, 409, "conflict")
    assert "2 in stock" in problem["detail"]
    product = await stored(session, Product, created["id"])
    assert product is not None
    assert product.stock_quantity == 2


@pytest.mark.parametrize(("stock", "delta"), [(MAX_INT4, 1), (1, MAX_INT4), (MAX_INT4 - 5, 10)])
async def test_stock_adjustment_past_the_column_range_returns_409_and_keeps_stock(
    client: AsyncClient,
    session: AsyncSession,
    create_product: CreateProduct,
    stock: int,
    delta: int,
) -> None:
    created = await create_product(stock_quantity=stock)

    response = await client.post(
        f"{PRODUCTS}/{created['id']}/stock-adjustments", json={"delta": delta}
    )

    problem = assert_problem(response, 409, "conflict")
    assert f"{stock} in stock" in problem["detail"]
    assert str(MAX_INT4) in problem["detail"]
    product = await stored(session, Product, created["id"])
    assert product is not None
    assert product.stock_quantity == stock


async def test_stock_adjustment_of_missing_product_returns_404(client: AsyncClient) -> None:
    response = await client.post(f"{PRODUCTS}/777777/stock-adjustments", json={"delta": 1})

    assert_problem(response, 404)


@pytest.mark.parametrize(
    "body", [{"delta": 0}, {"delta": "1"}, {"delta": 1.5}, {}, {"delta": 1, "x": 1}]
)
async def test_stock_adjustment_with_invalid_delta_returns_422(
    client: AsyncClient, create_product: CreateProduct, body: dict[str, Any]
) -> None:
    created = await create_product()

    response = await client.post(f"{PRODUCTS}/{created['id']}/stock-adjustments", json=body)

    assert_problem(response, 422)


async def test_create_product_with_huge_chunked_body_returns_413(client: AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65_536

    response = await client.post(
        PRODUCTS, content=chunks(), headers={"content-type": "application/json"}
    )

    assert_problem(response, 413)


@pytest.mark.parametrize("price", [-0.0, "0.00", 0, 0.57, "0.57"])
async def test_a_price_is_stored_exactly_and_never_negative_zero(
    client: AsyncClient, price: object
) -> None:
    response = await client.post(
        "/api/v1/products", json={"sku": "ZERO-1", "name": "Zero", "price": price}
    )

    assert response.status_code == 201, response.text
    assert response.json()["price"] in {"0.00", "0.57"}
