"""The tasks API as a resource: creating a task, changing its fields, deleting it. Its status
lifecycle, its references to other rows and its behaviour under concurrent requests have
modules of their own (test_tasks_transitions_api.py, test_tasks_references_api.py,
test_tasks_concurrency_api.py); ETag, If-Match and id range are proved for every resource in
tests/core/test_versioned_resources_api.py."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.tasks.models import Task
from tests.support.database import stored
from tests.support.factories import (
    TASKS,
    CreateTask,
    SetStatus,
    task_payload,
)
from tests.support.http import api_client, assert_problem
from tests.support.tasks import ALLOWED, REFERENCES, bring_to, task_count
from tests.support.users import create_user, tokens_for

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


# --- delete ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(ALLOWED))
async def test_delete_task_in_any_status_returns_204(
    client: AsyncClient, create_task: CreateTask, set_status: SetStatus, status: str
) -> None:
    task = await bring_to(set_status, await create_task(), status)

    response = await client.delete(f"{TASKS}/{task['id']}")

    assert response.status_code == 204
