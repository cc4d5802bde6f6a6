"""The task lifecycle as the tests state it (independently of the code under test), and
reaching a status through the API."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.tasks.models import Task
from tests.support.factories import SetStatus

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
# A task's reference fields, each the id of a row of another slice.
REFERENCES = ["assignee_id", "customer_id", "product_id"]


async def bring_to(set_status: SetStatus, task: dict[str, Any], status: str) -> dict[str, Any]:
    for step in PATH_FROM_TODO[status]:
        task = await set_status(task, step)
    assert task["status"] == status
    return task


async def task_count(session: AsyncSession) -> int:
    return len((await session.execute(select(col(Task.id)))).all())
