from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from backoffice.customers.models import Customer, CustomerStatus
from backoffice.customers.schemas import CustomerSort
from tests.support.factories import CUSTOMERS, CreateCustomer
from tests.support.http import assert_problem, walk_pages

ROWS = 150
_NAMES = ["Ada", "bob", "Émile", "carol", "Zoë", "ada", "Bob"]
_COMPANIES = [None, "Acme Ltd", "Globex", "Initech Ltd", None]
_DOMAINS = ["example.com", "ACME.io", "mail.test"]
_STATUSES = list(CustomerStatus)
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


async def seed(session: AsyncSession, rows: int = ROWS) -> list[Customer]:
    """Rows with repeated names and creation times (so ties must be broken by id), creation
    times out of id order, mixed statuses and some customers without a company."""
    customers = [
        Customer(
            name=f"{_NAMES[number % len(_NAMES)]} {number % 11}",
            email=f"seed{number:04d}@{_DOMAINS[number % len(_DOMAINS)]}",
            company=_COMPANIES[number % len(_COMPANIES)],
            status=_STATUSES[(number // 2) % len(_STATUSES)],
            created_at=_EPOCH + timedelta(minutes=(number * 7) % 37),
        )
        for number in range(rows)
    ]
    session.add_all(customers)
    await session.commit()
    return customers


async def walk(client: AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    return await walk_pages(client, CUSTOMERS, params)


def created_at_key(item: dict[str, Any]) -> tuple[datetime, int]:
    return (datetime.fromisoformat(item["created_at"]), item["id"])


@pytest.mark.parametrize("sort", list(CustomerSort))
async def test_list_customers_walks_every_row_once_in_order(
    client: AsyncClient, session: AsyncSession, connection: AsyncConnection, sort: CustomerSort
) -> None:
    await seed(session)

    items = await walk(client, {"sort": sort.value, "limit": 13})

    ids = [item["id"] for item in items]
    assert len(ids) == ROWS
    assert len(set(ids)) == ROWS  # no duplicates, and with the count, no gaps
    descending = sort.value.startswith("-")
    if sort.value.removeprefix("-") == "created_at":
        expected = [item["id"] for item in sorted(items, key=created_at_key, reverse=descending)]
    else:  # names follow the database's collation, not Python's code-point order
        direction = "DESC" if descending else "ASC"
        rows = await connection.execute(
            text(f"SELECT id FROM customers ORDER BY name {direction}, id {direction}")  # noqa: S608  # fixed names
        )
        expected = list(rows.scalars())
    assert ids == expected


async def test_list_customers_created_at_order_breaks_ties_by_id(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed(session, 80)

    items = await walk(client, {"sort": "created_at", "limit": 7})

    keys = [created_at_key(item) for item in items]
    assert keys == sorted(keys)
    assert len({created for created, _ in keys}) < len(keys)  # the seed does repeat times


async def test_list_customers_defaults_to_20_newest_first(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed(session, 25)

    page = (await client.get(CUSTOMERS)).json()

    assert len(page["items"]) == 20
    assert page["next_cursor"] is not None
    created = [created_at_key(item) for item in page["items"]]
    assert created == sorted(created, reverse=True)


async def test_list_customers_exactly_full_last_page_has_no_cursor(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed(session, 10)

    page = (await client.get(CUSTOMERS, params={"limit": 10})).json()

    assert len(page["items"]) == 10
    assert page["next_cursor"] is None


async def test_list_customers_when_there_are_none_returns_an_empty_page(
    client: AsyncClient,
) -> None:
    response = await client.get(CUSTOMERS)

    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


async def test_list_customers_items_have_the_read_shape(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    created = await create_customer(phone="+14155550123", company="Acme", notes="n")

    page = (await client.get(CUSTOMERS)).json()

    assert page["items"] == [created]


def matches(item: dict[str, Any], params: dict[str, str]) -> bool:
    """The filters, spelt out in Python."""

    def contains(q: str) -> bool:
        fields = (item["name"], item["email"], item["company"] or "")
        return any(q.lower() in field.lower() for field in fields)

    checks: dict[str, Callable[[str], bool]] = {
        "q": contains,
        "status": lambda value: item["status"] == value,
        "sort": lambda _: True,
    }
    return all(checks[name](value) for name, value in params.items())


@pytest.mark.parametrize(
    "params",
    [
        {"q": "ada"},  # name, either case
        {"q": "ADA 1"},
        {"q": "mile"},
        {"q": "seed00"},  # email
        {"q": "acme.IO"},
        {"q": "globex"},  # company
        {"q": "ltd"},
        {"q": "acme"},  # company or email
        {"q": "ex"},  # either
        {"status": "lead"},
        {"status": "active"},
        {"status": "inactive"},
        {"q": "bob", "status": "active"},
        {"q": "ltd", "status": "inactive", "sort": "name"},
        {"q": "example", "status": "lead", "sort": "-name"},
        {"status": "active", "sort": "created_at"},
    ],
)
async def test_list_customers_filters_match_a_python_filter_of_the_same_rows(
    client: AsyncClient, session: AsyncSession, params: dict[str, str]
) -> None:
    await seed(session, 120)
    everything = await walk(client, {"limit": 100, "sort": params.get("sort", "-created_at")})

    filtered = await walk(client, params | {"limit": 9})

    expected = [item["id"] for item in everything if matches(item, params)]
    assert [item["id"] for item in filtered] == expected  # same rows, same order
    assert filtered  # each case was chosen to match something
    assert len(filtered) < len(everything)  # and to leave something out


async def test_list_customers_q_that_matches_nothing_returns_an_empty_page(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed(session, 20)

    page = (await client.get(CUSTOMERS, params={"q": "no such customer"})).json()

    assert page == {"items": [], "next_cursor": None}


async def test_list_customers_q_does_not_match_notes_or_phone(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    await create_customer(name="Plain", notes="secret word", phone="+14155550123")

    secret = (await client.get(CUSTOMERS, params={"q": "secret"})).json()
    phone = (await client.get(CUSTOMERS, params={"q": "4155550123"})).json()

    assert secret["items"] == []
    assert phone["items"] == []


@pytest.mark.parametrize(
    ("q", "names", "expected"),
    [
        ("100%", ["100% Organic", "1000 Organics"], ["100% Organic"]),
        ("a_b", ["a_b Corp", "axb Corp"], ["a_b Corp"]),
        ("%", ["50% Off", "Full price"], ["50% Off"]),
        ("_", ["snake_case", "camelCase"], ["snake_case"]),
        ("\\", ["back\\slash", "backslash"], ["back\\slash"]),
        ("\\%", ["odd\\%name", "odd%name"], ["odd\\%name"]),
    ],
)
async def test_list_customers_q_treats_like_wildcards_literally(
    client: AsyncClient,
    create_customer: CreateCustomer,
    q: str,
    names: list[str],
    expected: list[str],
) -> None:
    for name in names:
        await create_customer(name=name)

    items = await walk(client, {"q": q})

    assert [item["name"] for item in items] == expected


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": "101"},
        {"limit": "ten"},
        {"sort": "email"},
        {"sort": "status"},
        {"sort": "+name"},
        {"sort": "Name"},
        {"status": "vip"},
        {"status": "Active"},
        {"unknown": "1"},
        {"q": ""},
        {"q": "x" * 101},
        {"cursor": "x" * 1025},
    ],
)
async def test_list_customers_with_invalid_query_returns_422(
    client: AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get(CUSTOMERS, params=params)

    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "eyJmb28iOiAxfQ", "A" * 200, "a"])
async def test_list_customers_with_forged_cursor_returns_400(
    client: AsyncClient, cursor: str
) -> None:
    response = await client.get(CUSTOMERS, params={"cursor": cursor})

    assert_problem(response, 400, "invalid-cursor")


async def test_list_customers_with_tampered_cursor_returns_400(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed(session, 5)
    cursor = (await client.get(CUSTOMERS, params={"limit": 2})).json()["next_cursor"]
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")

    response = await client.get(CUSTOMERS, params={"limit": 2, "cursor": tampered})

    assert_problem(response, 400, "invalid-cursor")


@pytest.mark.parametrize(
    ("issued_for", "used_with"),
    [("name", "created_at"), ("created_at", "-created_at"), ("-name", "name"), ("name", None)],
)
async def test_list_customers_with_cursor_of_another_sort_returns_400(
    client: AsyncClient, session: AsyncSession, issued_for: str, used_with: str | None
) -> None:
    await seed(session, 5)
    cursor = (await client.get(CUSTOMERS, params={"limit": 2, "sort": issued_for})).json()[
        "next_cursor"
    ]
    params = {"cursor": cursor} | ({"sort": used_with} if used_with else {})

    response = await client.get(CUSTOMERS, params=params)

    problem = assert_problem(response, 400, "invalid-cursor")
    assert repr(issued_for) in problem["detail"]


async def test_list_customers_cursor_keeps_working_with_the_same_filters(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed(session, 60)
    params: dict[str, Any] = {"status": "active", "sort": "name", "limit": 5}
    first = (await client.get(CUSTOMERS, params=params)).json()

    second = (await client.get(CUSTOMERS, params=params | {"cursor": first["next_cursor"]})).json()

    first_ids = {item["id"] for item in first["items"]}
    assert second["items"]
    assert first_ids.isdisjoint(item["id"] for item in second["items"])
    assert all(item["status"] == "active" for item in second["items"])


def _explain_keyset(table_filter: str, column: str, direction: str) -> str:
    operator = "<" if direction == "DESC" else ">"
    return (
        f"EXPLAIN SELECT * FROM customers WHERE {table_filter} ({column}, id) {operator} "  # noqa: S608  # fixed names
        f"(SELECT {column}, id FROM customers LIMIT 1) "
        f"ORDER BY {column} {direction}, id {direction} LIMIT 21"
    )


async def _plan(connection: AsyncConnection, statement: str) -> list[str]:
    # Make every alternative to an ordered index scan prohibitively expensive: if no index
    # yields this order, the plan still has to Sort, and the test sees it.
    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
        await connection.execute(text(f"SET LOCAL {setting} = off"))
    plan = await connection.execute(text(statement))
    return [line for (line,) in plan]


def _assert_ordered_index_scan(lines: list[str], index: str) -> None:
    top = "\n".join(lines)
    assert "Index Scan" in top, top
    assert index in top, top
    assert not any(
        line.strip().startswith("->  Sort") or line.startswith("Sort") for line in lines
    ), top


@pytest.mark.parametrize("sort", list(CustomerSort))
async def test_every_sort_is_answered_by_an_index_without_sorting(
    connection: AsyncConnection, sort: CustomerSort
) -> None:
    """Keyset pages cost the same at any depth only if an index yields the order directly."""
    column = sort.value.removeprefix("-")
    direction = "DESC" if sort.value.startswith("-") else "ASC"

    lines = await _plan(connection, _explain_keyset("", column, direction))

    _assert_ordered_index_scan(lines, f"ix_customers_{column}_id")


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
async def test_status_filter_in_created_at_order_is_answered_by_an_index_without_sorting(
    connection: AsyncConnection, direction: str
) -> None:
    lines = await _plan(
        connection, _explain_keyset("status = 'active' AND", "created_at", direction)
    )

    _assert_ordered_index_scan(lines, "ix_customers_status_created_at_id")
