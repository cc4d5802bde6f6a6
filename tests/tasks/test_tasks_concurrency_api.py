"""Tasks under concurrent requests that really commit: If-Match lets one writer win, and status
changes never lose an update nor complete a task twice."""

import asyncio

import pytest
from httpx import AsyncClient

from tests.support.factories import (
    TASKS,
    task_payload,
)

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
