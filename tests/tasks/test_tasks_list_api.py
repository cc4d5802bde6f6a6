"""GET /tasks and GET /customers/{id}/tasks: keyset pages, sorts, filters, query counts, plans."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.customers.models import Customer
from backoffice.products.models import Product
from backoffice.tasks.models import Task, TaskPriority, TaskStatus
from backoffice.tasks.schemas import TaskSort
from tests.support.database import StatementCounter
from tests.support.factories import TASKS
from tests.support.http import api_client, assert_problem, walk_pages
from tests.support.users import create_user, tokens_for

ROWS = 200
OPEN = {"todo", "in_progress", "blocked"}
PRIORITY_ORDER = [priority.value for priority in TaskPriority]
Params = list[tuple[str, str]]


def customer_tasks(customer_id: int) -> str:
    return f"/api/v1/customers/{customer_id}/tasks"


def utc_today() -> date:
    return datetime.now(UTC).date()


@dataclass
class Seeded:
    tasks: list[Task]
    assignees: list[User]  # the last one is the superuser (the `client`'s user)
    customers: list[Customer]  # the last one has no task
    products: list[Product]

    def ids(self) -> set[int]:
        return {task_id(task) for task in self.tasks}


def task_id(task: Task) -> int:
    assert task.id is not None
    return task.id


def _title(number: int) -> str:
    # LIKE wildcards in some titles: q must take them literally.
    specials = {0: "50% off", 10: "500 off", 5: "snake_case", 15: "snakeXcase"}
    base = specials.get(number % 20, ["Call", "email", "Visit", "call back"][number % 7 % 4])
    return f"{base} {number % 13}"


async def seed(session: AsyncSession, creator: User, rows: int = ROWS) -> Seeded:
    """Tasks spread over every status, priority, reference and due date (a third undated, the
    rest on eleven days around today), with repeated titles and creation times, so that ties
    must be broken by id."""
    assignees = [
        await create_user(session, email="ann@example.com"),
        await create_user(session, email="bob@example.com"),
        creator,
    ]
    customers = [
        Customer(name=f"Customer {n}", email=f"c{n}@example.com", company=company)
        for n, company in enumerate(["Acme", None, "Initech", "Nobody's"])
    ]
    products = [Product(sku=f"T-{n}", name=f"Product {n}", price=Decimal("9.99")) for n in range(3)]
    session.add_all([*customers, *products])
    await session.flush()
    today = utc_today()
    now = datetime.now(UTC)
    statuses, priorities = list(TaskStatus), list(TaskPriority)
    tasks = [
        Task(
            title=_title(number),
            status=statuses[number % 5],
            completed_at=now if statuses[number % 5] == TaskStatus.DONE else None,
            priority=priorities[(number // 5) % 4],
            due_date=None if number % 3 == 0 else today + timedelta(days=number % 11 - 5),
            # Independent cycles, so that every combination of references occurs.
            assignee_id=assignees[(number // 4) % 4 - 1].id if (number // 4) % 4 else None,
            customer_id=customers[number % 4 - 1].id if number % 4 else None,
            product_id=products[(number // 16) % 4 - 1].id if (number // 16) % 4 else None,
            created_by=user_id(creator),
            # 50 distinct instants, not in id order: creation-time ties are common.
            created_at=now - timedelta(days=1) + timedelta(minutes=(number * 37) % 50),
        )
        for number in range(rows)
    ]
    session.add_all(tasks)
    await session.commit()
    return Seeded(tasks, assignees, customers, products)


def user_id(user: User) -> int:
    assert user.id is not None
    return user.id


async def walk(
    client: AsyncClient, params: Params, url: str = TASKS, limit: int = 17
) -> list[dict[str, Any]]:
    return await walk_pages(client, url, [*params, ("limit", str(limit))])


def sort_key(sort: TaskSort) -> Callable[[dict[str, Any]], tuple[Any, int]]:
    """The documented order as a Python key; a descending sort reverses the whole key."""
    descending = sort.value.startswith("-")
    # Undated tasks last in both directions: the far end of the date line for each.
    undated = date.min if descending else date.max

    def key(item: dict[str, Any]) -> tuple[Any, int]:
        field = sort.value.removeprefix("-")
        if field == "created_at":
            value: Any = datetime.fromisoformat(item["created_at"])
        elif field == "due_date":
            value = date.fromisoformat(item["due_date"]) if item["due_date"] else undated
        else:
            value = PRIORITY_ORDER.index(item["priority"])
        return (value, item["id"])

    return key


def in_order(items: list[dict[str, Any]], sort: TaskSort) -> list[int]:
    ordered = sorted(items, key=sort_key(sort), reverse=sort.value.startswith("-"))
    return [item["id"] for item in ordered]


def as_item(task: Task) -> dict[str, Any]:
    """The fields the Python filters and sorts read, as the API spells them."""
    return {
        "id": task.id,
        "title": task.title,
        "status": task.status.value,
        "priority": task.priority.value,
        "due_date": task.due_date.isoformat() if task.due_date else None,
        "assignee_id": task.assignee_id,
        "customer_id": task.customer_id,
        "product_id": task.product_id,
        "created_at": task.created_at.isoformat(),
    }


# --- sorting and paging ---------------------------------------------------------------------


@pytest.mark.parametrize("sort", list(TaskSort))
async def test_list_tasks_walks_every_row_once_in_order(
    client: AsyncClient, session: AsyncSession, superuser: User, sort: TaskSort
) -> None:
    seeded = await seed(session, superuser)

    items = await walk(client, [("sort", sort.value)])

    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids))  # no duplicates
    assert set(ids) == seeded.ids()  # no gaps
    # The order is computed from the rows as seeded, not as the API reports them.
    assert ids == in_order([as_item(task) for task in seeded.tasks], sort)


async def test_seed_has_the_ties_and_undated_tasks_the_sort_tests_rely_on(
    session: AsyncSession, superuser: User
) -> None:
    seeded = await seed(session, superuser)
    tasks = seeded.tasks
    today = utc_today()

    undated = [task for task in tasks if task.due_date is None]
    assert len(undated) > 17 * 2  # undated tasks span several pages
    assert len({task.due_date for task in tasks}) < len(tasks) // 10
    assert len({task.created_at for task in tasks}) < len(tasks) // 2
    assert {task.status for task in tasks} == set(TaskStatus)
    assert {task.priority for task in tasks} == set(TaskPriority)
    assert any(task.due_date and task.due_date < today for task in tasks)
    assert any(task.due_date and task.due_date > today for task in tasks)
    assert any(task.due_date == today for task in tasks)


@pytest.mark.parametrize("sort", [TaskSort.DUE_DATE, TaskSort.DUE_DATE_DESC])
async def test_due_date_sorts_put_undated_tasks_last(
    client: AsyncClient, session: AsyncSession, superuser: User, sort: TaskSort
) -> None:
    await seed(session, superuser, 60)

    items = await walk(client, [("sort", sort.value)], limit=7)

    dates = [item["due_date"] for item in items]
    first_undated = dates.index(None)
    assert dates[:first_undated]
    assert None not in dates[:first_undated]
    assert set(dates[first_undated:]) == {None}
    dated = dates[:first_undated]
    assert dated == sorted(dated, reverse=sort == TaskSort.DUE_DATE_DESC)
    undated_ids = [item["id"] for item in items[first_undated:]]
    assert undated_ids == sorted(undated_ids, reverse=sort == TaskSort.DUE_DATE_DESC)


async def test_list_tasks_defaults_to_20_newest_first(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    seeded = await seed(session, superuser, 25)

    page = (await client.get(TASKS)).json()

    assert page["next_cursor"] is not None
    expected = in_order([as_item(task) for task in seeded.tasks], TaskSort.CREATED_AT_DESC)
    assert [item["id"] for item in page["items"]] == expected[:20]


async def test_list_tasks_last_page_has_no_cursor(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    await seed(session, superuser, 100)

    full = (await client.get(TASKS, params={"limit": 100})).json()
    short = (await client.get(TASKS, params={"limit": 99})).json()

    assert len(full["items"]) == 100
    assert full["next_cursor"] is None
    assert len(short["items"]) == 99
    assert short["next_cursor"] is not None


async def test_list_tasks_of_an_empty_table_is_one_empty_page(client: AsyncClient) -> None:
    page = (await client.get(TASKS)).json()

    assert page == {"items": [], "next_cursor": None}


async def test_list_items_carry_the_assignee_customer_and_product_summaries(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    seeded = await seed(session, superuser, 40)
    users = {user_id(user): user for user in seeded.assignees}
    customers = {customer.id: customer for customer in seeded.customers}
    products = {product.id: product for product in seeded.products}

    items = {item["id"]: item for item in await walk(client, [], limit=100)}

    for task in seeded.tasks:
        item = items[task_id(task)]
        assert item["title"] == task.title
        assert item["status"] == task.status.value
        assert item["priority"] == task.priority.value
        assert item["due_date"] == (task.due_date.isoformat() if task.due_date else None)
        assert item["created_by"] == superuser.id
        assert (item["completed_at"] is not None) == (task.status == TaskStatus.DONE)
        assert item["assignee_id"] == task.assignee_id
        assert item["assignee"] == (
            None
            if task.assignee_id is None
            else {
                "id": task.assignee_id,
                "email": users[task.assignee_id].email,
                "full_name": users[task.assignee_id].full_name,
            }
        )
        assert item["customer_id"] == task.customer_id
        assert item["customer"] == (
            None
            if task.customer_id is None
            else {
                "id": task.customer_id,
                "name": customers[task.customer_id].name,
                "company": customers[task.customer_id].company,
            }
        )
        assert item["product_id"] == task.product_id
        assert item["product"] == (
            None
            if task.product_id is None
            else {
                "id": task.product_id,
                "sku": products[task.product_id].sku,
                "name": products[task.product_id].name,
            }
        )
    # Every kind of summary, and every absence of one, was exercised.
    for field in ("assignee", "customer", "product"):
        assert {item[field] is None for item in items.values()} == {True, False}


# --- filters ----------------------------------------------------------------------------------


def resolve(params: Params, seeded: Seeded) -> Params:
    """Placeholders to values: @assignee<n>, @customer<n>, @product<n>, @today[+-days]."""
    today = utc_today()
    resolved: Params = []
    for name, placeholder in params:
        value = placeholder
        if placeholder.startswith("@today"):
            offset = int(placeholder.removeprefix("@today") or 0)
            value = (today + timedelta(days=offset)).isoformat()
        elif placeholder.startswith("@"):
            for prefix, entities in (
                ("@assignee", seeded.assignees),
                ("@customer", seeded.customers),
                ("@product", seeded.products),
            ):
                if placeholder.startswith(prefix):
                    value = str(entities[int(placeholder.removeprefix(prefix))].id)
            assert value != placeholder, placeholder
        resolved.append((name, value))
    return resolved


def python_filter(
    params: Params, caller_id: int
) -> Callable[[dict[str, Any]], bool]:  # the documented filters, spelled out
    today = utc_today()

    def due(item: dict[str, Any]) -> date | None:
        return date.fromisoformat(item["due_date"]) if item["due_date"] else None

    def overdue(item: dict[str, Any]) -> bool:
        day = due(item)
        return item["status"] in OPEN and day is not None and day < today

    def keep(item: dict[str, Any]) -> bool:
        statuses = [value for name, value in params if name == "status"]
        priorities = [value for name, value in params if name == "priority"]
        if statuses and item["status"] not in statuses:
            return False
        if priorities and item["priority"] not in priorities:
            return False
        day = due(item)
        checks: dict[str, Callable[[str], bool]] = {
            "assignee_id": lambda value: item["assignee_id"] == int(value),
            "assignee": lambda value: value == "me" and item["assignee_id"] == caller_id,
            "customer_id": lambda value: item["customer_id"] == int(value),
            "product_id": lambda value: item["product_id"] == int(value),
            "due_after": lambda value: day is not None and day >= date.fromisoformat(value),
            "due_before": lambda value: day is not None and day <= date.fromisoformat(value),
            "overdue": lambda value: overdue(item) is (value == "true"),
            "q": lambda value: value.lower() in item["title"].lower(),
        }
        return all(
            checks[name](value)
            for name, value in params
            if name not in {"status", "priority", "sort"}
        )

    return keep


FILTER_CASES: list[Params] = [
    [("status", "todo")],
    [("status", "todo"), ("status", "blocked")],
    [("status", "done"), ("status", "cancelled"), ("status", "in_progress")],
    [("priority", "urgent")],
    [("priority", "low"), ("priority", "high")],
    [("assignee_id", "@assignee0")],
    [("assignee_id", "@assignee1"), ("sort", "due_date")],
    [("assignee", "me")],
    [("customer_id", "@customer0")],
    [("customer_id", "@customer1"), ("sort", "-priority")],
    [("product_id", "@product2")],
    [("due_after", "@today")],
    [("due_before", "@today-1")],
    [("due_after", "@today-2"), ("due_before", "@today+2")],
    [("due_after", "@today"), ("due_before", "@today")],
    [("overdue", "true")],
    [("overdue", "false")],
    [("overdue", "true"), ("sort", "-due_date")],
    [("overdue", "false"), ("sort", "due_date")],
    [("q", "call")],
    [("q", "CALL B")],
    [("q", "50%")],
    [("q", "e_c")],
    [
        ("status", "todo"),
        ("status", "in_progress"),
        ("priority", "high"),
        ("priority", "urgent"),
        ("assignee_id", "@assignee2"),
    ],
    [("overdue", "true"), ("customer_id", "@customer2"), ("sort", "due_date")],
    [("customer_id", "@customer0"), ("product_id", "@product0"), ("due_before", "@today+3")],
    [("assignee", "me"), ("overdue", "false"), ("q", "a"), ("sort", "priority")],
    [("status", "blocked"), ("due_after", "@today-5"), ("sort", "-created_at")],
    [("priority", "medium"), ("priority", "high"), ("q", "off"), ("sort", "created_at")],
]


@pytest.mark.parametrize("params", FILTER_CASES, ids=str)
async def test_list_tasks_filters_match_a_python_filter_of_the_same_rows(
    client: AsyncClient, session: AsyncSession, superuser: User, params: Params
) -> None:
    seeded = await seed(session, superuser)
    params = resolve(params, seeded)
    everything = await walk(client, [], limit=100)
    assert len(everything) == ROWS
    keep = python_filter(params, user_id(superuser))

    filtered = await walk(client, params, limit=9)

    sort = TaskSort(dict(params).get("sort", TaskSort.CREATED_AT_DESC.value))
    expected = in_order([item for item in everything if keep(item)], sort)
    assert [item["id"] for item in filtered] == expected
    assert filtered  # each case was chosen to match something
    assert len(filtered) < ROWS  # and excluded something


async def test_overdue_excludes_closed_tasks_however_late(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    seeded = await seed(session, superuser)
    late_closed = [
        task
        for task in seeded.tasks
        if task.status in {TaskStatus.DONE, TaskStatus.CANCELLED}
        and task.due_date is not None
        and task.due_date < utc_today()
    ]
    assert late_closed

    overdue = await walk(client, [("overdue", "true"), ("status", "done"), ("status", "cancelled")])
    not_overdue = await walk(client, [("overdue", "false")], limit=100)

    assert overdue == []
    assert {task_id(task) for task in late_closed} <= {item["id"] for item in not_overdue}


async def test_overdue_false_includes_undated_and_due_today(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    seeded = await seed(session, superuser)
    open_not_late = {
        task_id(task)
        for task in seeded.tasks
        if task.status in {TaskStatus.TODO, TaskStatus.IN_PROGRESS, TaskStatus.BLOCKED}
        and (task.due_date is None or task.due_date >= utc_today())
    }
    assert any(task.due_date is None for task in seeded.tasks if task_id(task) in open_not_late)
    assert any(
        task.due_date == utc_today() for task in seeded.tasks if task_id(task) in open_not_late
    )

    items = await walk(client, [("overdue", "false"), *[("status", s) for s in OPEN]])

    assert {item["id"] for item in items} == open_not_late


async def test_q_treats_like_wildcards_literally(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    await seed(session, superuser, 40)

    percent = await walk(client, [("q", "50%")])
    underscore = await walk(client, [("q", "e_c")])
    backslash = await walk(client, [("q", "\\")])

    assert percent
    assert {item["title"].split(" ")[0] for item in percent} == {"50%"}
    assert underscore
    assert {item["title"].split(" ")[0] for item in underscore} == {"snake_case"}
    assert backslash == []


async def test_assignee_me_is_the_callers_own_tasks(
    app: FastAPI, session: AsyncSession, settings: Settings, superuser: User
) -> None:
    seeded = await seed(session, superuser, 60)
    viewer = await create_user(session, email="viewer@example.com", roles=["viewer"])
    mine = seeded.tasks[:7]
    for task in mine:
        task.assignee_id = viewer.id
    await session.commit()
    pair = await tokens_for(session, settings, viewer)

    async with api_client(app, pair.access_token) as viewer_client:
        items = await walk(viewer_client, [("assignee", "me")], limit=3)
        by_id = await walk(viewer_client, [("assignee_id", str(viewer.id))], limit=3)

    assert {item["id"] for item in items} == {task_id(task) for task in mine}
    assert items == by_id


# --- a customer's tasks -----------------------------------------------------------------------


@pytest.mark.parametrize("customer", [0, 1, 2])
async def test_customer_tasks_are_exactly_that_customers_tasks(
    client: AsyncClient, session: AsyncSession, superuser: User, customer: int
) -> None:
    seeded = await seed(session, superuser)
    customer_id = seeded.customers[customer].id
    assert customer_id is not None
    theirs = [as_item(task) for task in seeded.tasks if task.customer_id == customer_id]
    assert 0 < len(theirs) < ROWS

    for sort in TaskSort:
        items = await walk(client, [("sort", sort.value)], url=customer_tasks(customer_id), limit=7)

        assert [item["id"] for item in items] == in_order(theirs, sort)
        assert {item["customer"]["id"] for item in items} == {customer_id}


@pytest.mark.parametrize(
    "params",
    [
        [("status", "todo"), ("status", "blocked")],
        [("overdue", "true")],
        [("overdue", "false"), ("sort", "due_date")],
        [("priority", "high"), ("assignee", "me")],
        [("assignee_id", "@assignee0"), ("product_id", "@product1")],
        [("due_after", "@today-1"), ("due_before", "@today+4"), ("sort", "-due_date")],
        [("q", "CALL"), ("sort", "priority")],
    ],
    ids=str,
)
async def test_customer_tasks_filters_match_a_python_filter(
    client: AsyncClient, session: AsyncSession, superuser: User, params: Params
) -> None:
    seeded = await seed(session, superuser)
    params = resolve(params, seeded)
    customer_id = seeded.customers[0].id
    assert customer_id is not None
    keep = python_filter([*params, ("customer_id", str(customer_id))], user_id(superuser))
    everything = await walk(client, [], limit=100)

    items = await walk(client, params, url=customer_tasks(customer_id), limit=5)

    sort = TaskSort(dict(params).get("sort", TaskSort.CREATED_AT_DESC.value))
    assert [item["id"] for item in items] == in_order([i for i in everything if keep(i)], sort)
    assert items


async def test_customer_without_tasks_has_an_empty_list(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    seeded = await seed(session, superuser, 30)
    customer_id = seeded.customers[-1].id
    assert customer_id is not None

    response = await client.get(customer_tasks(customer_id))

    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}


async def test_customer_tasks_of_a_missing_customer_returns_404(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    await seed(session, superuser, 10)

    response = await client.get(customer_tasks(2**31 - 1))

    assert_problem(response, 404, "not-found")


@pytest.mark.parametrize(
    "params",
    [
        {"customer_id": "1"},
        {"unknown": "1"},
        {"sort": "title"},
        {"limit": "0"},
        {"status": "open"},
        {"due_after": "2026-05-02T00:00:00"},
        {"due_before": "0"},
    ],
)
async def test_customer_tasks_with_invalid_query_returns_422(
    client: AsyncClient, session: AsyncSession, superuser: User, params: dict[str, str]
) -> None:
    seeded = await seed(session, superuser, 10)

    response = await client.get(customer_tasks(task_customer(seeded)), params=params)

    assert_problem(response, 422, "validation-error")


def task_customer(seeded: Seeded) -> int:
    customer_id = seeded.customers[0].id
    assert customer_id is not None
    return customer_id


@pytest.mark.parametrize("customer_id", ["0", "-1", str(2**31), "abc"])
async def test_customer_tasks_with_invalid_customer_id_returns_422(
    client: AsyncClient, customer_id: str
) -> None:
    response = await client.get(f"/api/v1/customers/{customer_id}/tasks")

    assert_problem(response, 422, "validation-error")


# --- query counts -----------------------------------------------------------------------------


async def seed_fully_referenced(session: AsyncSession, creator: User, rows: int) -> list[Task]:
    """Tasks that each have an assignee, a customer and a product (all different ones)."""
    users = [await create_user(session) for _ in range(3)]
    customers = [Customer(name=f"N {n}", email=f"n{n}@example.com") for n in range(rows)]
    products = [Product(sku=f"N-{n}", name=f"N {n}", price=Decimal(1)) for n in range(rows)]
    session.add_all([*customers, *products])
    await session.flush()
    tasks = [
        Task(
            title=f"Joined {n}",
            due_date=utc_today() + timedelta(days=n % 9) if n % 2 else None,
            assignee_id=users[n % 3].id,
            customer_id=customers[n].id,
            product_id=products[n].id,
            created_by=user_id(creator),
        )
        for n in range(rows)
    ]
    session.add_all(tasks)
    await session.commit()
    return tasks


def assert_one_joined_read(statement: str) -> None:
    assert statement.count("LEFT OUTER JOIN") == 3, statement
    for table in ("users", "customers", "products"):
        assert f"JOIN {table} ON" in statement, statement


@pytest.mark.parametrize("sort", list(TaskSort))
async def test_a_page_costs_the_same_queries_whatever_its_size(
    client: AsyncClient,
    session: AsyncSession,
    superuser: User,
    statements: list[str],
    sort: TaskSort,
) -> None:
    await seed_fully_referenced(session, superuser, 105)
    counts: dict[int, int] = {}

    for limit in (5, 100):
        statements.clear()
        response = await client.get(TASKS, params={"limit": limit, "sort": sort.value})
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        assert len(items) == limit
        assert all(item["assignee"] and item["customer"] and item["product"] for item in items)
        counts[limit] = len(statements)
        assert_one_joined_read(statements[-1])

    assert counts == {5: 2, 100: 2}, statements  # who you are; the page


async def test_a_later_page_costs_the_same_queries(
    client: AsyncClient, session: AsyncSession, superuser: User, statements: list[str]
) -> None:
    await seed_fully_referenced(session, superuser, 30)
    cursor = (await client.get(TASKS, params={"limit": 10, "sort": "due_date"})).json()[
        "next_cursor"
    ]
    statements.clear()

    response = await client.get(TASKS, params={"limit": 10, "sort": "due_date", "cursor": cursor})

    assert response.status_code == 200, response.text
    assert len(statements) == 2, statements
    assert_one_joined_read(statements[-1])


async def test_a_customers_task_page_costs_the_same_queries_whatever_its_size(
    client: AsyncClient, session: AsyncSession, superuser: User, statements: list[str]
) -> None:
    tasks = await seed_fully_referenced(session, superuser, 105)
    customer_id = tasks[0].customer_id
    assert customer_id is not None
    for task in tasks:
        task.customer_id = customer_id
    await session.commit()
    counts: dict[int, int] = {}

    for limit in (5, 100):
        statements.clear()
        response = await client.get(customer_tasks(customer_id), params={"limit": limit})
        assert response.status_code == 200, response.text
        assert len(response.json()["items"]) == limit
        counts[limit] = len(statements)
        assert_one_joined_read(statements[-1])

    assert counts == {5: 3, 100: 3}, statements  # who you are; the customer exists; the page


async def test_reading_one_task_is_two_queries(
    client: AsyncClient, session: AsyncSession, superuser: User, statements: list[str]
) -> None:
    tasks = await seed_fully_referenced(session, superuser, 3)
    statements.clear()

    response = await client.get(f"{TASKS}/{task_id(tasks[1])}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["assignee"]
    assert body["customer"]
    assert body["product"]
    assert len(statements) == 2, statements  # who you are; the task with its summaries
    assert_one_joined_read(statements[-1])


# --- plans ------------------------------------------------------------------------------------

# The key each sort orders by, exactly as the indexes spell it (see backoffice.tasks.models).
SORT_KEYS = {
    "created_at": "created_at",
    "priority": "priority",
    "due_date": "COALESCE(due_date, 'infinity'::date)",
    "-due_date": "COALESCE(due_date, '-infinity'::date)",
}


async def _disable_everything_but_index_scans(connection: AsyncConnection) -> None:
    # Make every alternative to an ordered index scan prohibitively expensive: if no index
    # yields this order, the plan still has to Sort, and the test sees it.
    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
        await connection.execute(text(f"SET LOCAL {setting} = off"))


def assert_index_scan_without_sort(lines: list[str]) -> None:
    plan = "\n".join(lines)
    assert "Index Scan" in plan or "Index Only Scan" in plan, plan
    assert not any(
        line.strip().startswith(("->  Sort", "->  Incremental Sort")) or line.startswith("Sort")
        for line in lines
    ), plan


@pytest.mark.parametrize("sort", list(TaskSort))
async def test_every_sort_is_answered_by_an_index_without_sorting(
    connection: AsyncConnection, sort: TaskSort
) -> None:
    """Keyset pages cost the same at any depth only if an index yields the order directly."""
    key = SORT_KEYS.get(sort.value) or SORT_KEYS[sort.value.removeprefix("-")]
    direction = "DESC" if sort.value.startswith("-") else "ASC"
    operator = "<" if direction == "DESC" else ">"
    await _disable_everything_but_index_scans(connection)

    plan = await connection.execute(
        text(
            f"EXPLAIN SELECT * FROM tasks WHERE ({key}, id) {operator} "  # noqa: S608  # fixed names
            f"(SELECT {key}, id FROM tasks LIMIT 1) "
            f"ORDER BY {key} {direction}, id {direction} LIMIT 21"
        )
    )

    assert_index_scan_without_sort([line for (line,) in plan])


@pytest.mark.parametrize("sort", list(TaskSort))
async def test_the_apps_own_page_query_is_answered_by_an_index_without_sorting(
    client: AsyncClient,
    session: AsyncSession,
    superuser: User,
    connection: AsyncConnection,
    statements: list[str],
    sort: TaskSort,
) -> None:
    """The query the app really issues for a later page (joins, seek condition and all),
    explained with the values it was sent with."""
    await seed_fully_referenced(session, superuser, 10)
    cursor = (await client.get(TASKS, params={"limit": 3, "sort": sort.value})).json()[
        "next_cursor"
    ]
    statements.clear()

    response = await client.get(TASKS, params={"limit": 3, "sort": sort.value, "cursor": cursor})

    assert response.status_code == 200, response.text
    page_query = statements[-1]
    counter: StatementCounter = connection.info[StatementCounter]  # the `statements` fixture's
    parameters = counter.parameters[-1]
    assert isinstance(parameters, tuple | list)
    assert_one_joined_read(page_query)
    await _disable_everything_but_index_scans(connection)

    plan = await connection.exec_driver_sql(f"EXPLAIN {page_query}", tuple(parameters))

    assert_index_scan_without_sort([line for (line,) in plan])


# --- invalid queries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        [("limit", "0")],
        [("limit", "101")],
        [("limit", "ten")],
        [("sort", "title")],
        [("sort", "due")],
        [("sort", "-id")],
        [("status", "open")],
        [("status", "todo"), ("status", "TODO")],
        [("status", "todo")] * 6,
        [("priority", "critical")],
        [("assignee", "someone")],
        [("assignee_id", "0")],
        [("assignee_id", str(2**31))],
        [("customer_id", "-1")],
        [("product_id", "abc")],
        [("due_after", "2026-13-01")],
        [("due_before", "tomorrow")],
        [("due_after", "1700000000")],
        [("overdue", "maybe")],
        [("q", "")],
        [("q", "x" * 101)],
        [("unknown", "1")],
        [("cursor", "x" * 1025)],
    ],
    ids=lambda params: str(params)[:60],
)
async def test_list_tasks_with_invalid_query_returns_422(
    client: AsyncClient, params: Params
) -> None:
    response = await client.get(TASKS, params=tuple(params))

    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "eyJmb28iOiAxfQ", "A" * 200])
async def test_list_tasks_with_forged_cursor_returns_400(client: AsyncClient, cursor: str) -> None:
    response = await client.get(TASKS, params={"cursor": cursor})

    assert_problem(response, 400, "invalid-cursor")


async def test_list_tasks_with_tampered_cursor_returns_400(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    await seed(session, superuser, 5)
    cursor = (await client.get(TASKS, params={"limit": 2})).json()["next_cursor"]
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")

    response = await client.get(TASKS, params={"limit": 2, "cursor": tampered})

    assert_problem(response, 400, "invalid-cursor")


@pytest.mark.parametrize(
    ("issued_for", "used_with"),
    [
        ("priority", "-priority"),
        ("due_date", "-due_date"),
        ("-created_at", "due_date"),
        ("-due_date", "created_at"),
    ],
)
async def test_list_tasks_with_cursor_of_another_sort_returns_400(
    client: AsyncClient, session: AsyncSession, superuser: User, issued_for: str, used_with: str
) -> None:
    await seed(session, superuser, 10)
    first = await client.get(TASKS, params={"limit": 2, "sort": issued_for})
    cursor = first.json()["next_cursor"]
    assert cursor is not None

    response = await client.get(TASKS, params={"sort": used_with, "cursor": cursor})

    problem = assert_problem(response, 400, "invalid-cursor")
    assert repr(issued_for) in problem["detail"]


async def test_customer_tasks_with_forged_cursor_returns_400(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    seeded = await seed(session, superuser, 10)

    response = await client.get(customer_tasks(task_customer(seeded)), params={"cursor": "junk"})

    assert_problem(response, 400, "invalid-cursor")


async def test_an_inverted_due_window_is_empty(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    await seed(session, superuser, 10)

    response = await client.get(
        TASKS, params={"due_after": "2026-05-02", "due_before": "2026-05-01"}
    )

    assert response.status_code == 200
    assert response.json()["items"] == []


async def test_assignee_me_and_assignee_id_must_both_hold(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    seeded = await seed(session, superuser)
    mine = await walk_pages(client, TASKS, {"assignee": "me"})
    assert mine, "the seed assigns tasks to the caller"
    other = user_id(seeded.assignees[0])

    both_me = await walk_pages(client, TASKS, {"assignee": "me", "assignee_id": user_id(superuser)})
    me_and_other = await client.get(TASKS, params={"assignee": "me", "assignee_id": other})

    assert both_me == mine
    assert me_and_other.json()["items"] == []
