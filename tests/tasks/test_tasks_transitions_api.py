"""The task status lifecycle: which transitions PATCH accepts (the whole 5x5 table), what each
one does to `completed_at`, and the transitions a task lists as allowed."""

from datetime import UTC, datetime
from itertools import product

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.tasks.models import Task, TaskStatus
from tests.support.database import stored
from tests.support.factories import (
    TASKS,
    CreateTask,
    SetStatus,
)
from tests.support.http import assert_problem
from tests.support.tasks import ALLOWED, bring_to

ALL_PAIRS = list(product(ALLOWED, ALLOWED))
LEGAL_PAIRS = [(current, target) for current, target in ALL_PAIRS if target in ALLOWED[current]]
STAYS = [(status, status) for status in ALLOWED]
ILLEGAL_PAIRS = [pair for pair in ALL_PAIRS if pair not in LEGAL_PAIRS and pair not in STAYS]


def pair_id(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


def test_transition_pairs_cover_every_status_combination() -> None:
    assert len(ALL_PAIRS) == 25
    assert (len(LEGAL_PAIRS), len(STAYS), len(ILLEGAL_PAIRS)) == (9, 5, 11)
    assert set(ALLOWED) == set(TaskStatus)


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
