"""GET /tasks/export: the list's filters and sort, the references' summaries as the caller
may see them, as a CSV file."""

from collections.abc import Mapping

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.core.spreadsheet import EXPORT_BATCH_SIZE
from tests.support.factories import TASKS, CreateTask
from tests.support.http import api_client, walk_pages
from tests.support.spreadsheet import csv_header, csv_rows
from tests.support.users import tokens_for, user_with_grants

EXPORT = f"{TASKS}/export"


async def test_export_has_the_filtered_sorted_tasks_and_their_references(
    client: AsyncClient, create_task: CreateTask, references: dict[str, int]
) -> None:
    await create_task(title="Later", due_date="2030-02-01", priority="low", **references)
    await create_task(title="-Sooner", due_date="2030-01-01", priority="high")
    await create_task(title="Undated", priority="urgent")
    await create_task(title="Other customer", due_date="2030-01-15")
    params = {"sort": "due_date", "q": "e"}

    response = await client.get(EXPORT, params=params)

    rows = csv_rows(response)
    listed = await walk_pages(client, TASKS, params)
    assert [row["id"] for row in rows] == [str(item["id"]) for item in listed]
    assert [row["title"] for row in rows] == ["'-Sooner", "Other customer", "Later", "Undated"]
    later = rows[2]
    assert later["due_date"] == "2030-02-01"
    assert later["priority"] == "low"
    assert later["status"] == "todo"
    assert later["customer_id"] == str(references["customer_id"])
    assert later["customer_name"] == listed[2]["customer"]["name"]
    assert later["product_sku"] == listed[2]["product"]["sku"]
    assert later["assignee_email"] == listed[2]["assignee"]["email"]
    assert rows[0]["customer_id"] == rows[0]["customer_name"] == ""
    assert csv_header(response)[:4] == ["id", "title", "description", "status"]
    assert "allowed_transitions" not in csv_header(response)


async def test_export_takes_the_lists_filters_customer_included(
    client: AsyncClient, create_task: CreateTask, references: dict[str, int]
) -> None:
    mine = await create_task(**references)
    await create_task()

    rows = csv_rows(
        await client.get(
            EXPORT, params=[("customer_id", references["customer_id"]), ("status", "todo")]
        )
    )

    assert [row["id"] for row in rows] == [str(mine["id"])]


async def test_export_shows_a_references_details_only_to_who_may_read_its_module(
    app: FastAPI,
    session: AsyncSession,
    settings: Settings,
    create_task: CreateTask,
    references: dict[str, int],
) -> None:
    await create_task(**references)
    grants: Mapping[str, list[str]] = {"tasks": ["read"], "products": ["read"]}
    user = await user_with_grants(session, dict(grants))
    token = (await tokens_for(session, settings, user)).access_token

    async with api_client(app, token) as client:
        (row,) = csv_rows(await client.get(EXPORT))

    assert row["product_sku"] != ""
    assert row["customer_id"] == str(references["customer_id"])
    assert row["customer_name"] == row["assignee_email"] == ""


@pytest.mark.parametrize("sort", ["due_date", "-due_date", "-priority"])
async def test_export_crosses_batches_in_the_lists_order_on_computed_and_enum_keys(
    client: AsyncClient, connection: AsyncConnection, superuser: User, sort: str
) -> None:
    """Undated tasks last in both due-date orders, ties everywhere: the keyset of each batch
    picks up exactly where the one before ended."""
    total = EXPORT_BATCH_SIZE * 2 + 3
    await connection.execute(
        text(
            "INSERT INTO tasks (title, due_date, priority, created_by) "
            "SELECT 'T' || n, CASE WHEN n % 3 = 0 THEN NULL ELSE date '2030-01-01' + n % 7 END, "
            "(ARRAY['low', 'medium', 'high', 'urgent'])[n % 4 + 1]::task_priority, :user "
            "FROM generate_series(1, :total) n"
        ),
        {"total": total, "user": superuser.id},
    )

    rows = csv_rows(await client.get(EXPORT, params={"sort": sort}))

    listed = await walk_pages(client, TASKS, {"sort": sort, "limit": 100})
    assert len(rows) == total
    assert [row["id"] for row in rows] == [str(item["id"]) for item in listed]
