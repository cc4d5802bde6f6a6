import asyncio
from datetime import UTC, datetime
from itertools import product
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.tasks.models import Task, TaskStatus
from tests.support.database import stored
from tests.support.factories import (
    TASKS,
    CreateCustomer,
    CreateProduct,
    CreateTask,
    SetStatus,
    task_payload,
)
from tests.support.http import api_client, assert_problem
from tests.support.users import create_user, tokens_for

PRODUCTS = "/api/v1/products"
CUSTOMERS = "/api/v1/customers"
USERS = "/api/v1/users"

# The lifecycle as specified, in lifecycle order (as `allowed_transitions` lists it).
ALLOWED: dict[str, list[str]] = {
    "todo": ["in_progress", "blocked", "cancelled"],
    "in_progress": ["blocked", "done", "cancelled"],
    "blocked": ["in_progress", "cancelled"],
    "done": ["in_progress"],
    "cancelled": [],
}
# Legal PATCHes that bring a new (todo) task to each status.
PATH_FROM_TODO: dict[str, list[str]] = {
    "todo": [],
    "in_progress": ["in_progress"],
    "blocked": ["blocked"],
    "done": ["in_progress", "done"],
    "cancelled": ["cancelled"],
}
ALL_PAIRS = list(product(ALLOWED, ALLOWED))
LEGAL_PAIRS = [(current, target) for current, target in ALL_PAIRS if target in ALLOWED[current]]
STAYS = [(status, status) for status in ALLOWED]
ILLEGAL_PAIRS = [pair for pair in ALL_PAIRS if pair not in LEGAL_PAIRS and pair not in STAYS]
REFERENCES = ["assignee_id", "customer_id", "product_id"]
MISSING_ID = 2**31 - 1


def pair_id(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


async def task_count(session: AsyncSession) -> int:
    return len((await session.execute(select(col(Task.id)))).all())


async def bring_to(set_status: SetStatus, task: dict[str, Any], status: str) -> dict[str, Any]:
    for step in PATH_FROM_TODO[status]:
        task = await set_status(task, step)
    assert task["status"] == status
    return task


def error_fields(problem: dict[str, Any]) -> dict[str, str]:
    return {error["field"]: error["type"] for error in problem["errors"]}


@pytest.fixture
async def references(
    session: AsyncSession, create_customer: CreateCustomer, create_product: CreateProduct
) -> dict[str, int]:
    """An existing active user, customer and product, as a task's reference fields."""
    assignee = await create_user(session)
    assert assignee.id is not None
    customer = await create_customer()
    item = await create_product()
    return {"assignee_id": assignee.id, "customer_id": customer["id"], "product_id": item["id"]}


def test_transition_pairs_cover_every_status_combination() -> None:
    assert len(ALL_PAIRS) == 25
    assert (len(LEGAL_PAIRS), len(STAYS), len(ILLEGAL_PAIRS)) == (9, 5, 11)
    assert set(ALLOWED) == set(TaskStatus)


# --- create ---------------------------------------------------------------------------------


async def test_create_task_returns_201_with_location_etag_and_body(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    payload = task_payload(
        description="Ask about the March invoice",
        priority="high",
        due_date="2026-12-24",
    )

    response = await client.post(TASKS, json=payload)

    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"{TASKS}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert body | payload == body  # every field sent comes back unchanged
    assert body["status"] == "todo"
    assert body["allowed_transitions"] == ALLOWED["todo"]
    assert body["completed_at"] is None
    assert body["version"] == 1
    assert body["created_by"] == superuser.id
    for field in ("assignee", "customer", "product"):
        assert body[field] is None
        assert body[f"{field}_id"] is None
    task = await stored(session, Task, body["id"])
    assert task is not None
    assert (task.title, task.status, task.created_by) == (payload["title"], "todo", superuser.id)


async def test_create_task_with_only_a_title_takes_the_defaults(client: AsyncClient) -> None:
    response = await client.post(TASKS, json={"title": "Just a title"})

    assert response.status_code == 201
    body = response.json()
    assert body["priority"] == "medium"
    assert body["description"] is None
    assert body["due_date"] is None
    assert body["status"] == "todo"


async def test_create_task_strips_the_title(client: AsyncClient) -> None:
    response = await client.post(TASKS, json={"title": "  Call back  "})

    assert response.status_code == 201
    assert response.json()["title"] == "Call back"


@pytest.mark.parametrize(
    "overrides",
    [
        {"title": "x" * 200},
        {"description": "x" * 10_000},
        {"description": ""},
        {"description": None},
        {"due_date": "0001-01-02"},
        {"due_date": "9999-12-30"},
        {"due_date": None},
        {"priority": "low"},
        {"priority": "urgent"},
        {"assignee_id": None, "customer_id": None, "product_id": None},
    ],
)
async def test_create_task_accepts_boundary_values(
    client: AsyncClient, overrides: dict[str, Any]
) -> None:
    payload = task_payload(**overrides)

    response = await client.post(TASKS, json=payload)

    assert response.status_code == 201, response.text
    assert response.json() | payload == response.json()


async def test_create_task_records_the_caller_as_created_by(
    app: FastAPI, session: AsyncSession, settings: Settings, superuser: User, client: AsyncClient
) -> None:
    manager = await create_user(session, email="manager@example.com", roles=["manager"])
    pair = await tokens_for(session, settings, manager)

    async with api_client(app, pair.access_token) as manager_client:
        by_manager = await manager_client.post(TASKS, json=task_payload())
    by_superuser = await client.post(TASKS, json=task_payload())

    assert by_manager.status_code == 201
    assert by_manager.json()["created_by"] == manager.id
    assert by_superuser.json()["created_by"] == superuser.id
    task = await stored(session, Task, by_manager.json()["id"])
    assert task is not None
    assert task.created_by == manager.id


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"title": ""}, "body.title"),
        ({"title": "   "}, "body.title"),
        ({"title": "x" * 201}, "body.title"),
        ({"title": 5}, "body.title"),
        ({"title": None}, "body.title"),
        ({"description": "x" * 10_001}, "body.description"),
        ({"description": 5}, "body.description"),
        ({"priority": "critical"}, "body.priority"),
        ({"priority": "HIGH"}, "body.priority"),
        ({"priority": 1}, "body.priority"),
        ({"priority": None}, "body.priority"),
        ({"due_date": 20261224}, "body.due_date"),
        ({"due_date": 1_798_070_400}, "body.due_date"),
        ({"due_date": 1.5}, "body.due_date"),
        ({"due_date": True}, "body.due_date"),
        ({"due_date": "2026-13-01"}, "body.due_date"),
        ({"due_date": "2026-02-30"}, "body.due_date"),
        ({"due_date": "24/12/2026"}, "body.due_date"),
        ({"due_date": ""}, "body.due_date"),
        ({"due_date": "0001-01-01"}, "body.due_date"),
        ({"due_date": "9999-12-31"}, "body.due_date"),
        ({"assignee_id": 0}, "body.assignee_id"),
        ({"assignee_id": -1}, "body.assignee_id"),
        ({"assignee_id": 2**31}, "body.assignee_id"),
        ({"assignee_id": "1"}, "body.assignee_id"),
        ({"assignee_id": 1.5}, "body.assignee_id"),
        ({"assignee_id": True}, "body.assignee_id"),
        ({"customer_id": 0}, "body.customer_id"),
        ({"customer_id": 2**31}, "body.customer_id"),
        ({"customer_id": "1"}, "body.customer_id"),
        ({"product_id": 0}, "body.product_id"),
        ({"product_id": 2**31}, "body.product_id"),
        ({"product_id": [1]}, "body.product_id"),
        ({"status": "todo"}, "body.status"),
        ({"status": "done"}, "body.status"),
        ({"id": 99}, "body.id"),
        ({"version": 7}, "body.version"),
        ({"created_by": 1}, "body.created_by"),
        ({"completed_at": "2026-01-01T00:00:00Z"}, "body.completed_at"),
        ({"allowed_transitions": []}, "body.allowed_transitions"),
        ({"assignee": {"id": 1}}, "body.assignee"),
    ],
)
async def test_create_task_with_invalid_field_returns_422_naming_it(
    client: AsyncClient, session: AsyncSession, overrides: dict[str, Any], field: str
) -> None:
    response = await client.post(TASKS, json=task_payload(**overrides))

    problem = assert_problem(response, 422, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}
    assert await task_count(session) == 0


async def test_create_task_without_a_title_returns_422_naming_it(client: AsyncClient) -> None:
    response = await client.post(TASKS, json={})

    problem = assert_problem(response, 422, "validation-error")
    assert {error["field"] for error in problem["errors"]} == {"body.title"}


@pytest.mark.parametrize("content", [b'{"title": ', b"[]", b'"a task"', b"null", b""])
async def test_create_task_with_a_body_that_is_not_an_object_returns_422(
    client: AsyncClient, content: bytes
) -> None:
    response = await client.post(
        TASKS, content=content, headers={"content-type": "application/json"}
    )

    assert_problem(response, 422)


async def test_create_task_with_huge_body_returns_413(
    client: AsyncClient, session: AsyncSession
) -> None:
    response = await client.post(TASKS, json=task_payload(description="x" * 2_000_000))

    assert_problem(response, 413)
    assert await task_count(session) == 0


# --- references -----------------------------------------------------------------------------


async def test_create_task_with_references_returns_their_summaries(
    client: AsyncClient,
    session: AsyncSession,
    create_customer: CreateCustomer,
    create_product: CreateProduct,
) -> None:
    assignee = await create_user(session, email="ada@example.com")
    customer = await create_customer(name="Grace Hopper", company="Navy Labs")
    item = await create_product(sku="KB-9", name="Keyboard")

    response = await client.post(
        TASKS,
        json=task_payload(
            assignee_id=assignee.id, customer_id=customer["id"], product_id=item["id"]
        ),
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["assignee_id"] == assignee.id
    assert body["assignee"] == {
        "id": assignee.id,
        "email": "ada@example.com",
        "full_name": assignee.full_name,
    }
    assert body["customer_id"] == customer["id"]
    assert body["customer"] == {
        "id": customer["id"],
        "name": "Grace Hopper",
        "company": "Navy Labs",
    }
    assert body["product_id"] == item["id"]
    assert body["product"] == {"id": item["id"], "sku": "KB-9", "name": "Keyboard"}
    assert (await client.get(f"{TASKS}/{body['id']}")).json() == body


async def test_customer_summary_without_a_company_has_null_company(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    customer = await create_customer(name="Solo Trader")

    response = await client.post(TASKS, json=task_payload(customer_id=customer["id"]))

    assert response.json()["customer"] == {
        "id": customer["id"],
        "name": "Solo Trader",
        "company": None,
    }


@pytest.mark.parametrize("field", REFERENCES)
async def test_create_task_with_a_missing_reference_returns_422_naming_it(
    client: AsyncClient, session: AsyncSession, field: str
) -> None:
    response = await client.post(TASKS, json=task_payload(**{field: MISSING_ID}))

    problem = assert_problem(response, 422, "invalid-input")
    assert error_fields(problem) == {f"body.{field}": "reference_not_found"}
    assert str(MISSING_ID) in problem["errors"][0]["message"]
    assert field in problem["detail"]
    assert await task_count(session) == 0


async def test_create_task_with_every_reference_missing_reports_all_at_once(
    client: AsyncClient, session: AsyncSession
) -> None:
    payload = task_payload(**dict.fromkeys(REFERENCES, MISSING_ID))

    response = await client.post(TASKS, json=payload)

    problem = assert_problem(response, 422, "invalid-input")
    assert error_fields(problem) == {
        "body.assignee_id": "reference_not_found",
        "body.customer_id": "reference_not_found",
        "body.product_id": "reference_not_found",
    }
    assert all(field in problem["detail"] for field in REFERENCES)
    assert await task_count(session) == 0


async def test_create_task_with_some_references_missing_reports_only_those(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    customer = await create_customer()

    response = await client.post(
        TASKS,
        json=task_payload(
            assignee_id=MISSING_ID, customer_id=customer["id"], product_id=MISSING_ID - 1
        ),
    )

    problem = assert_problem(response, 422, "invalid-input")
    assert error_fields(problem) == {
        "body.assignee_id": "reference_not_found",
        "body.product_id": "reference_not_found",
    }


async def test_create_task_assigned_to_an_inactive_user_returns_422(
    client: AsyncClient, session: AsyncSession
) -> None:
    inactive = await create_user(session, email="gone@example.com", is_active=False)

    response = await client.post(TASKS, json=task_payload(assignee_id=inactive.id))

    problem = assert_problem(response, 422, "invalid-input")
    assert error_fields(problem) == {"body.assignee_id": "inactive"}
    assert await task_count(session) == 0


async def test_create_task_with_inactive_assignee_and_missing_customer_reports_both(
    client: AsyncClient, session: AsyncSession
) -> None:
    inactive = await create_user(session, is_active=False)

    response = await client.post(
        TASKS, json=task_payload(assignee_id=inactive.id, customer_id=MISSING_ID)
    )

    problem = assert_problem(response, 422, "invalid-input")
    assert error_fields(problem) == {
        "body.assignee_id": "inactive",
        "body.customer_id": "reference_not_found",
    }


@pytest.mark.parametrize("field", REFERENCES)
async def test_patch_task_to_a_missing_reference_returns_422_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, create_task: CreateTask, field: str
) -> None:
    created = await create_task()

    response = await client.patch(
        f"{TASKS}/{created['id']}", json={field: MISSING_ID, "title": "Not saved"}
    )

    problem = assert_problem(response, 422, "invalid-input")
    assert error_fields(problem) == {f"body.{field}": "reference_not_found"}
    task = await stored(session, Task, created["id"])
    assert task is not None
    assert (task.title, getattr(task, field), task.version) == (created["title"], None, 1)


async def test_patch_task_with_every_reference_missing_reports_all_at_once(
    client: AsyncClient, create_task: CreateTask
) -> None:
    created = await create_task()

    response = await client.patch(
        f"{TASKS}/{created['id']}", json=dict.fromkeys(REFERENCES, MISSING_ID)
    )

    problem = assert_problem(response, 422, "invalid-input")
    assert set(error_fields(problem)) == {f"body.{field}" for field in REFERENCES}


async def test_patch_task_to_an_inactive_assignee_returns_422_and_keeps_the_old_one(
    client: AsyncClient, session: AsyncSession, create_task: CreateTask
) -> None:
    active = await create_user(session)
    inactive = await create_user(session, is_active=False)
    created = await create_task(assignee_id=active.id)

    response = await client.patch(f"{TASKS}/{created['id']}", json={"assignee_id": inactive.id})

    problem = assert_problem(response, 422, "invalid-input")
    assert error_fields(problem) == {"body.assignee_id": "inactive"}
    task = await stored(session, Task, created["id"])
    assert task is not None
    assert (task.assignee_id, task.version) == (active.id, 1)


async def test_patch_task_reassigns_to_another_active_user(
    client: AsyncClient, session: AsyncSession, create_task: CreateTask
) -> None:
    first = await create_user(session, email="first@example.com")
    second = await create_user(session, email="second@example.com")
    created = await create_task(assignee_id=first.id)

    response = await client.patch(f"{TASKS}/{created['id']}", json={"assignee_id": second.id})

    assert response.status_code == 200
    body = response.json()
    assert body["assignee_id"] == second.id
    assert body["assignee"] == {
        "id": second.id,
        "email": "second@example.com",
        "full_name": second.full_name,
    }
    assert body["version"] == 2


async def test_patch_task_sets_customer_and_product_with_their_summaries(
    client: AsyncClient,
    create_task: CreateTask,
    create_customer: CreateCustomer,
    create_product: CreateProduct,
) -> None:
    created = await create_task()
    customer = await create_customer(name="Acme Buyer", company="Acme")
    item = await create_product(sku="MS-1", name="Mouse")

    response = await client.patch(
        f"{TASKS}/{created['id']}", json={"customer_id": customer["id"], "product_id": item["id"]}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["customer"] == {"id": customer["id"], "name": "Acme Buyer", "company": "Acme"}
    assert body["product"] == {"id": item["id"], "sku": "MS-1", "name": "Mouse"}


async def test_task_summaries_follow_changes_to_the_referenced_rows(
    client: AsyncClient,
    session: AsyncSession,
    create_task: CreateTask,
    create_customer: CreateCustomer,
    create_product: CreateProduct,
) -> None:
    assignee = await create_user(session, email="before@example.com")
    customer = await create_customer(name="Old Name", company="Old Co")
    item = await create_product(sku="OLD-1", name="Old product")
    created = await create_task(
        assignee_id=assignee.id, customer_id=customer["id"], product_id=item["id"]
    )
    await client.patch(f"{USERS}/{assignee.id}", json={"full_name": "New Person"})
    await client.patch(f"{CUSTOMERS}/{customer['id']}", json={"name": "New Name", "company": None})
    await client.patch(f"{PRODUCTS}/{item['id']}", json={"sku": "NEW-1", "name": "New product"})

    response = await client.get(f"{TASKS}/{created['id']}")

    body = response.json()
    assert body["assignee"]["full_name"] == "New Person"
    assert body["customer"] == {"id": customer["id"], "name": "New Name", "company": None}
    assert body["product"] == {"id": item["id"], "sku": "NEW-1", "name": "New product"}
    assert body["version"] == created["version"]  # the task itself did not change


async def test_delete_product_referenced_by_a_task_returns_409_and_keeps_both(
    client: AsyncClient, create_task: CreateTask, create_product: CreateProduct
) -> None:
    item = await create_product()
    created = await create_task(product_id=item["id"])

    response = await client.delete(f"{PRODUCTS}/{item['id']}")

    assert_problem(response, 409, "conflict")
    assert (await client.get(f"{PRODUCTS}/{item['id']}")).status_code == 200
    task = (await client.get(f"{TASKS}/{created['id']}")).json()
    assert task["product_id"] == item["id"]
    assert task["product"]["sku"] == item["sku"]


async def test_delete_product_after_its_task_is_deleted_returns_204(
    client: AsyncClient, create_task: CreateTask, create_product: CreateProduct
) -> None:
    item = await create_product()
    created = await create_task(product_id=item["id"])
    await client.delete(f"{TASKS}/{created['id']}")

    response = await client.delete(f"{PRODUCTS}/{item['id']}")

    assert response.status_code == 204


async def test_delete_user_assigned_to_a_task_returns_409_and_keeps_the_assignment(
    client: AsyncClient, session: AsyncSession, create_task: CreateTask
) -> None:
    assignee = await create_user(session)
    created = await create_task(assignee_id=assignee.id)

    response = await client.delete(f"{USERS}/{assignee.id}")

    assert_problem(response, 409, "conflict")
    task = (await client.get(f"{TASKS}/{created['id']}")).json()
    assert task["assignee"]["id"] == assignee.id


# --- read -----------------------------------------------------------------------------------


# --- update ---------------------------------------------------------------------------------


async def test_patch_task_changes_only_the_fields_sent_and_bumps_version(
    client: AsyncClient, create_task: CreateTask
) -> None:
    created = await create_task(description="before", priority="low", due_date="2026-05-01")

    response = await client.patch(
        f"{TASKS}/{created['id']}", json={"title": "  Renamed  ", "priority": "urgent"}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["title"] == "Renamed"
    assert body["priority"] == "urgent"
    assert body["description"] == "before"
    assert body["due_date"] == "2026-05-01"
    assert body["status"] == "todo"
    assert body["version"] == 2
    assert response.headers["etag"] == '"2"'
    assert body["created_by"] == created["created_by"]
    assert body["created_at"] == created["created_at"]


@pytest.mark.parametrize(
    ("field", "value"), [("description", "new text"), ("due_date", "2030-01-01")]
)
async def test_patch_task_sets_an_optional_field(
    client: AsyncClient, create_task: CreateTask, field: str, value: str
) -> None:
    created = await create_task()

    response = await client.patch(f"{TASKS}/{created['id']}", json={field: value})

    assert response.status_code == 200
    assert response.json()[field] == value


@pytest.mark.parametrize("field", ["description", "due_date", *REFERENCES])
async def test_patch_task_field_to_null_clears_it(
    client: AsyncClient, create_task: CreateTask, references: dict[str, int], field: str
) -> None:
    created = await create_task(description="to clear", due_date="2026-06-30", **references)

    response = await client.patch(f"{TASKS}/{created['id']}", json={field: None})

    assert response.status_code == 200
    body = response.json()
    assert body[field] is None
    if field in REFERENCES:
        assert body[field.removesuffix("_id")] is None
    untouched = {"description", "due_date", *REFERENCES} - {field}
    assert all(body[other] == created[other] for other in untouched)
    assert body["version"] == 2


@pytest.mark.parametrize("field", ["title", "status", "priority"])
async def test_patch_task_required_field_to_null_returns_422_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, create_task: CreateTask, field: str
) -> None:
    created = await create_task()

    response = await client.patch(f"{TASKS}/{created['id']}", json={field: None})

    problem = assert_problem(response, 422, "validation-error")
    assert f"body.{field}" in {error["field"] for error in problem["errors"]}
    task = await stored(session, Task, created["id"])
    assert task is not None
    assert (task.title, task.status, task.priority, task.version) == (
        created["title"],
        "todo",
        "medium",
        1,
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": ""}, "body.title"),
        ({"title": "   "}, "body.title"),
        ({"title": "x" * 201}, "body.title"),
        ({"title": 5}, "body.title"),
        ({"description": "x" * 10_001}, "body.description"),
        ({"status": "archived"}, "body.status"),
        ({"status": "DONE"}, "body.status"),
        ({"status": 1}, "body.status"),
        ({"priority": "critical"}, "body.priority"),
        ({"due_date": 20261224}, "body.due_date"),
        ({"due_date": "0001-01-01"}, "body.due_date"),
        ({"due_date": "9999-12-31"}, "body.due_date"),
        ({"due_date": "tomorrow"}, "body.due_date"),
        ({"assignee_id": "1"}, "body.assignee_id"),
        ({"assignee_id": 0}, "body.assignee_id"),
        ({"customer_id": 2**31}, "body.customer_id"),
        ({"product_id": -5}, "body.product_id"),
        ({"id": 3}, "body.id"),
        ({"version": 5}, "body.version"),
        ({"created_by": 1}, "body.created_by"),
        ({"completed_at": None}, "body.completed_at"),
        ({"allowed_transitions": ["done"]}, "body.allowed_transitions"),
        ({"colour": "red"}, "body.colour"),
    ],
)
async def test_patch_task_with_invalid_body_returns_422_and_changes_nothing(
    client: AsyncClient,
    session: AsyncSession,
    create_task: CreateTask,
    body: dict[str, Any],
    field: str,
) -> None:
    created = await create_task()

    response = await client.patch(f"{TASKS}/{created['id']}", json=body)

    problem = assert_problem(response, 422, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}
    task = await stored(session, Task, created["id"])
    assert task is not None
    assert task.version == 1


@pytest.mark.parametrize(
    "body", [{"title": "Lost update"}, {"status": "in_progress"}, {"description": None}, {}]
)
async def test_patch_task_with_stale_if_match_returns_412_whatever_the_body_changes(
    client: AsyncClient, session: AsyncSession, create_task: CreateTask, body: dict[str, Any]
) -> None:
    # A status transition or an empty body is checked too; the If-Match contract itself (which
    # ETags are stale) is tests/core/test_versioned_resources_api.py.
    created = await create_task(description="kept")

    response = await client.patch(
        f"{TASKS}/{created['id']}", json=body, headers={"If-Match": '"0"'}
    )

    assert_problem(response, 412, "precondition-failed")
    task = await stored(session, Task, created["id"])
    assert task is not None
    assert (task.title, task.status, task.description, task.version) == (
        created["title"],
        "todo",
        "kept",
        1,
    )


# --- status transitions ---------------------------------------------------------------------


@pytest.mark.parametrize("pair", LEGAL_PAIRS, ids=pair_id)
async def test_patch_status_along_a_legal_transition_returns_200(
    client: AsyncClient,
    session: AsyncSession,
    create_task: CreateTask,
    set_status: SetStatus,
    pair: tuple[str, str],
) -> None:
    current, target = pair
    task = await bring_to(set_status, await create_task(), current)

    response = await client.patch(f"{TASKS}/{task['id']}", json={"status": target})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == target
    assert body["allowed_transitions"] == ALLOWED[target]
    assert body["version"] == task["version"] + 1
    assert response.headers["etag"] == f'"{task["version"] + 1}"'
    assert (body["completed_at"] is not None) == (target == "done")
    row = await stored(session, Task, task["id"])
    assert row is not None
    assert (row.status, row.version) == (target, task["version"] + 1)


@pytest.mark.parametrize("status", list(ALLOWED))
async def test_patch_status_to_the_current_status_is_an_allowed_no_op(
    client: AsyncClient, create_task: CreateTask, set_status: SetStatus, status: str
) -> None:
    task = await bring_to(set_status, await create_task(), status)

    response = await client.patch(f"{TASKS}/{task['id']}", json={"status": status})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == status
    assert body["allowed_transitions"] == ALLOWED[status]
    assert body["completed_at"] == task["completed_at"]
    assert body["version"] == task["version"]


@pytest.mark.parametrize("pair", ILLEGAL_PAIRS, ids=pair_id)
async def test_patch_status_along_an_illegal_transition_returns_409_and_changes_nothing(
    client: AsyncClient,
    session: AsyncSession,
    create_task: CreateTask,
    set_status: SetStatus,
    pair: tuple[str, str],
) -> None:
    current, target = pair
    task = await bring_to(set_status, await create_task(), current)

    response = await client.patch(
        f"{TASKS}/{task['id']}", json={"status": target, "title": "Not saved"}
    )

    problem = assert_problem(response, 409, "illegal-transition")
    detail = problem["detail"]
    if ALLOWED[current]:
        assert all(allowed in detail for allowed in ALLOWED[current]), detail
    else:
        assert "final" in detail
    after = await client.get(f"{TASKS}/{task['id']}")
    assert after.json() == task
    row = await stored(session, Task, task["id"])
    assert row is not None
    assert (row.status, row.title, row.version) == (current, task["title"], task["version"])


@pytest.mark.parametrize("status", list(ALLOWED))
async def test_task_lists_its_allowed_transitions_in_every_status(
    client: AsyncClient, create_task: CreateTask, set_status: SetStatus, status: str
) -> None:
    task = await bring_to(set_status, await create_task(), status)

    response = await client.get(f"{TASKS}/{task['id']}")

    assert response.json()["allowed_transitions"] == ALLOWED[status]


async def test_patch_status_to_done_sets_completed_at(
    client: AsyncClient, session: AsyncSession, create_task: CreateTask, set_status: SetStatus
) -> None:
    task = await set_status(await create_task(), "in_progress")
    before = datetime.now(UTC)

    response = await client.patch(f"{TASKS}/{task['id']}", json={"status": "done"})

    after = datetime.now(UTC)
    completed_at = datetime.fromisoformat(response.json()["completed_at"])
    assert before <= completed_at <= after
    row = await stored(session, Task, task["id"])
    assert row is not None
    assert row.completed_at == completed_at


async def test_reopening_a_done_task_clears_completed_at(
    client: AsyncClient, session: AsyncSession, create_task: CreateTask, set_status: SetStatus
) -> None:
    task = await bring_to(set_status, await create_task(), "done")

    response = await client.patch(f"{TASKS}/{task['id']}", json={"status": "in_progress"})

    assert response.status_code == 200
    assert response.json()["completed_at"] is None
    row = await stored(session, Task, task["id"])
    assert row is not None
    assert (row.status, row.completed_at) == ("in_progress", None)


async def test_finishing_a_reopened_task_again_sets_a_new_completed_at(
    create_task: CreateTask, set_status: SetStatus
) -> None:
    first = await bring_to(set_status, await create_task(), "done")
    await set_status(first, "in_progress")

    second = await set_status(first, "done")

    assert second["completed_at"] is not None
    assert datetime.fromisoformat(second["completed_at"]) > datetime.fromisoformat(
        first["completed_at"]
    )
    assert second["version"] == first["version"] + 2


async def test_editing_a_done_task_keeps_its_completed_at(
    client: AsyncClient, create_task: CreateTask, set_status: SetStatus
) -> None:
    task = await bring_to(set_status, await create_task(), "done")

    response = await client.patch(
        f"{TASKS}/{task['id']}", json={"title": "Renamed after the fact", "status": "done"}
    )

    assert response.status_code == 200
    assert response.json()["completed_at"] == task["completed_at"]
    assert response.json()["version"] == task["version"] + 1


@pytest.mark.parametrize("status", ["todo", "in_progress", "blocked", "cancelled"])
async def test_completed_at_stays_null_outside_done(
    create_task: CreateTask, set_status: SetStatus, status: str
) -> None:
    task = await create_task()

    task = await bring_to(set_status, task, status)

    assert task["completed_at"] is None


async def test_patch_status_with_other_fields_applies_them_together(
    client: AsyncClient, create_task: CreateTask
) -> None:
    created = await create_task()

    response = await client.patch(
        f"{TASKS}/{created['id']}",
        json={"status": "in_progress", "priority": "urgent", "description": "started"},
    )

    body = response.json()
    assert (body["status"], body["priority"], body["description"]) == (
        "in_progress",
        "urgent",
        "started",
    )
    assert body["version"] == 2


async def test_patch_status_of_missing_task_returns_404(client: AsyncClient) -> None:
    response = await client.patch(f"{TASKS}/999999", json={"status": "done"})

    assert_problem(response, 404, "not-found")


# --- delete ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(ALLOWED))
async def test_delete_task_in_any_status_returns_204(
    client: AsyncClient, create_task: CreateTask, set_status: SetStatus, status: str
) -> None:
    task = await bring_to(set_status, await create_task(), status)

    response = await client.delete(f"{TASKS}/{task['id']}")

    assert response.status_code == 204


# --- concurrency (real commits) -------------------------------------------------------------


@pytest.mark.committed
async def test_concurrent_patches_with_the_same_if_match_let_exactly_one_win(
    committed_client: AsyncClient,
) -> None:
    created = (await committed_client.post(TASKS, json=task_payload())).json()
    url = f"{TASKS}/{created['id']}"

    responses = await asyncio.gather(
        *(
            committed_client.patch(url, json={"title": f"writer {n}"}, headers={"If-Match": '"1"'})
            for n in range(8)
        )
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [412] * 7
    winner = next(response for response in responses if response.status_code == 200)
    final = await committed_client.get(url)
    assert final.json() == winner.json()
    assert final.json()["version"] == 2
    assert final.headers["etag"] == '"2"'


@pytest.mark.committed
async def test_concurrent_status_changes_without_if_match_never_lose_an_update(
    committed_client: AsyncClient,
) -> None:
    created = (await committed_client.post(TASKS, json=task_payload())).json()
    url = f"{TASKS}/{created['id']}"

    responses = await asyncio.gather(
        *(
            committed_client.patch(url, json={"status": "in_progress", "title": f"writer {n}"})
            for n in range(8)
        )
    )

    assert {response.status_code for response in responses} <= {200, 412}
    applied = [response.json() for response in responses if response.status_code == 200]
    assert applied
    versions = sorted(body["version"] for body in applied)
    assert versions == list(range(2, 2 + len(applied)))  # each success is one distinct change
    final = (await committed_client.get(url)).json()
    assert final["version"] == 1 + len(applied)
    assert final["status"] == "in_progress"
    assert final == max(applied, key=lambda body: body["version"])


@pytest.mark.committed
async def test_concurrent_completions_complete_the_task_once(
    committed_client: AsyncClient,
) -> None:
    created = (await committed_client.post(TASKS, json=task_payload())).json()
    url = f"{TASKS}/{created['id']}"
    started = await committed_client.patch(url, json={"status": "in_progress"})
    assert started.status_code == 200

    responses = await asyncio.gather(
        *(committed_client.patch(url, json={"status": "done"}) for _ in range(8))
    )

    assert {response.status_code for response in responses} <= {200, 412}
    applied = [response.json() for response in responses if response.status_code == 200]
    assert applied
    final = (await committed_client.get(url)).json()
    assert final["status"] == "done"
    assert final["version"] == 3
    assert {body["completed_at"] for body in applied} == {final["completed_at"]}


@pytest.mark.committed
async def test_concurrent_conflicting_transitions_leave_one_consistent_outcome(
    committed_client: AsyncClient,
) -> None:
    created = (await committed_client.post(TASKS, json=task_payload())).json()
    url = f"{TASKS}/{created['id']}"
    await committed_client.patch(url, json={"status": "in_progress"})
    targets = ["done", "cancelled"] * 4

    responses = await asyncio.gather(
        *(committed_client.patch(url, json={"status": target}) for target in targets)
    )

    assert {response.status_code for response in responses} <= {200, 409, 412}
    final = (await committed_client.get(url)).json()
    assert final["status"] in {"done", "cancelled"}
    assert final["version"] == 3  # in_progress -> done and done -> cancelled are not both legal
    assert (final["completed_at"] is not None) == (final["status"] == "done")
    for response, target in zip(responses, targets, strict=True):
        if response.status_code == 200:
            assert target == final["status"]
