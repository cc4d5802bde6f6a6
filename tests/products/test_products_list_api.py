import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from backoffice.products.models import Product
from backoffice.products.schemas import ProductSort
from tests.support.factories import PRODUCTS, CreateProduct, product_payload
from tests.support.http import assert_problem, walk_pages

ROWS = 230


async def seed(session: AsyncSession, rows: int = ROWS) -> list[Product]:
    """Rows with repeated names and prices, so ties must be broken by id."""
    products = [
        Product(
            sku=f"SEED-{number:04d}",
            name=f"{['Alpha', 'beta', 'Gamma', 'delta'][number % 4]} {number % 17}",
            price=Decimal(number % 23) + Decimal("0.99"),
            stock_quantity=number,
            is_active=number % 3 != 0,
        )
        for number in range(rows)
    ]
    session.add_all(products)
    await session.commit()
    return products


async def walk(client: AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    return await walk_pages(client, PRODUCTS, params)


def sort_key(sort: ProductSort) -> Any:
    field = sort.value.removeprefix("-")
    converters = {"price": Decimal, "name": str, "created_at": str}

    def key(item: dict[str, Any]) -> tuple[Any, int]:
        return (converters[field](item[field]), item["id"])

    return key


@pytest.mark.parametrize("sort", list(ProductSort))
async def test_list_products_walks_every_row_once_in_order(
    client: AsyncClient, session: AsyncSession, sort: ProductSort
) -> None:
    await seed(session)

    items = await walk(client, {"sort": sort.value, "limit": 17})

    ids = [item["id"] for item in items]
    assert len(ids) == ROWS
    assert len(set(ids)) == ROWS  # no duplicates, and with the count, no gaps
    expected = sorted(items, key=sort_key(sort), reverse=sort.value.startswith("-"))
    assert ids == [item["id"] for item in expected]


async def test_list_products_name_order_follows_the_database_collation(
    client: AsyncClient, session: AsyncSession, connection: AsyncConnection
) -> None:
    await seed(session, 40)

    items = await walk(client, {"sort": "name", "limit": 7})

    rows = await connection.execute(text("SELECT id FROM products ORDER BY name, id"))
    assert [item["id"] for item in items] == list(rows.scalars())


async def test_list_products_defaults_to_20_newest_first(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed(session, 25)

    page = (await client.get(PRODUCTS)).json()

    assert len(page["items"]) == 20
    assert page["next_cursor"] is not None
    created = [(item["created_at"], item["id"]) for item in page["items"]]
    assert created == sorted(created, reverse=True)


async def test_list_products_last_page_has_no_cursor(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed(session, 10)

    page = (await client.get(PRODUCTS, params={"limit": 10})).json()

    assert len(page["items"]) == 10
    assert page["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"q": "alpha"},
        {"q": "SEED-00"},
        {"q": "ta 1"},
        {"is_active": "true"},
        {"is_active": "false"},
        {"min_price": "5"},
        {"max_price": "3.99"},
        {"min_price": "2.50", "max_price": "10.99", "is_active": "true", "q": "a"},
    ],
)
async def test_list_products_filters_match_a_python_filter_of_the_same_rows(
    client: AsyncClient, session: AsyncSession, params: dict[str, str]
) -> None:
    await seed(session, 120)
    everything = await walk(client, {"limit": 100})

    def keep(item: dict[str, Any]) -> bool:
        price = Decimal(item["price"])
        checks: dict[str, Callable[[str], bool]] = {
            "q": lambda q: q.lower() in item["name"].lower() or q.lower() in item["sku"].lower(),
            "is_active": lambda value: item["is_active"] is (value == "true"),
            "min_price": lambda value: price >= Decimal(value),
            "max_price": lambda value: price <= Decimal(value),
        }
        return all(checks[name](value) for name, value in params.items())

    filtered = await walk(client, params | {"limit": 9})

    assert {item["id"] for item in filtered} == {item["id"] for item in everything if keep(item)}
    assert filtered  # each case was chosen to match something


async def test_list_products_q_treats_like_wildcards_literally(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    await create_product(name="100% cotton")
    await create_product(name="1000 cotton buds")

    items = await walk(client, {"q": "100%"})

    assert [item["name"] for item in items] == ["100% cotton"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"sort": "sku"},
        {"min_price": "-1"},
        {"min_price": "1e3"},
        {"max_price": "12345678901"},
        {"max_price": "1.005"},
        {"is_active": "maybe"},
        {"unknown": "1"},
        {"q": ""},
        {"q": "x" * 101},
    ],
)
async def test_list_products_with_invalid_query_returns_422(
    client: AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get(PRODUCTS, params=params)

    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "eyJmb28iOiAxfQ", "A" * 200])
async def test_list_products_with_forged_cursor_returns_400(
    client: AsyncClient, cursor: str
) -> None:
    response = await client.get(PRODUCTS, params={"cursor": cursor})

    assert_problem(response, 400, "invalid-cursor")


async def test_list_products_with_tampered_cursor_returns_400(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed(session, 5)
    cursor = (await client.get(PRODUCTS, params={"limit": 2})).json()["next_cursor"]
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")

    response = await client.get(PRODUCTS, params={"limit": 2, "cursor": tampered})

    assert_problem(response, 400, "invalid-cursor")


async def test_list_products_with_cursor_of_another_sort_returns_400(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed(session, 5)
    cursor = (await client.get(PRODUCTS, params={"limit": 2, "sort": "price"})).json()[
        "next_cursor"
    ]

    response = await client.get(PRODUCTS, params={"sort": "name", "cursor": cursor})

    problem = assert_problem(response, 400, "invalid-cursor")
    assert "price" in problem["detail"]


@pytest.mark.parametrize("sort", list(ProductSort))
async def test_every_sort_is_answered_by_an_index_without_sorting(
    connection: AsyncConnection, sort: ProductSort
) -> None:
    """Keyset pages cost the same at any depth only if an index yields the order directly."""
    column = sort.value.removeprefix("-")
    direction = "DESC" if sort.value.startswith("-") else "ASC"
    operator = "<" if direction == "DESC" else ">"
    # Make every alternative to an ordered index scan prohibitively expensive: if no index
    # yields this order, the plan still has to Sort, and the test sees it.
    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
        await connection.execute(text(f"SET LOCAL {setting} = off"))
    plan = await connection.execute(
        text(
            f"EXPLAIN SELECT * FROM products WHERE ({column}, id) {operator} "  # noqa: S608  # fixed names
            f"(SELECT {column}, id FROM products LIMIT 1) "
            f"ORDER BY {column} {direction}, id {direction} LIMIT 21"
        )
    )
    lines = [line for (line,) in plan]
    top = "\n".join(lines)
    assert "Index Scan" in top, top
    assert not any(
        line.strip().startswith("->  Sort") or line.startswith("Sort") for line in lines
    ), top


# --- concurrency (real commits) -------------------------------------------------------------


@pytest.mark.committed
async def test_concurrent_stock_removals_never_take_stock_below_zero(
    committed_client: AsyncClient,
) -> None:
    created = await committed_client.post(PRODUCTS, json=product_payload(stock_quantity=10))
    url = f"{PRODUCTS}/{created.json()['id']}/stock-adjustments"

    responses = await asyncio.gather(
        *(committed_client.post(url, json={"delta": -1}) for _ in range(25))
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 10 + [409] * 15
    final = await committed_client.get(f"{PRODUCTS}/{created.json()['id']}")
    assert final.json()["stock_quantity"] == 0
    assert final.json()["version"] == 11


@pytest.mark.committed
async def test_concurrent_patches_with_the_same_if_match_let_exactly_one_win(
    committed_client: AsyncClient,
) -> None:
    created = (await committed_client.post(PRODUCTS, json=product_payload())).json()
    url = f"{PRODUCTS}/{created['id']}"

    responses = await asyncio.gather(
        *(
            committed_client.patch(url, json={"name": f"writer {n}"}, headers={"If-Match": '"1"'})
            for n in range(8)
        )
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [412] * 7
    winner = next(response for response in responses if response.status_code == 200)
    final = (await committed_client.get(url)).json()
    assert final["name"] == winner.json()["name"]
    assert final["version"] == 2


async def test_an_inverted_price_range_is_empty(client: AsyncClient) -> None:
    created = await client.post(
        PRODUCTS, json={"sku": "RANGE-1", "name": "In range", "price": "4.50"}
    )
    assert created.status_code == 201

    response = await client.get(PRODUCTS, params={"min_price": "5", "max_price": "4"})

    assert response.status_code == 200
    assert response.json()["items"] == []
