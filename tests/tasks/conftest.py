from collections.abc import Awaitable, Callable
from itertools import count
from typing import Any

import pytest
from httpx import AsyncClient

# Fixtures of the slices a task refers to.
from tests.customers.conftest import CreateCustomer, create_customer
from tests.products.conftest import CreateProduct, create_product

TASKS = "/api/v1/tasks"

_task_numbers = count(1)

CreateTask = Callable[..., Awaitable[dict[str, Any]]]
SetStatus = Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]]

__all__ = ["CreateCustomer", "CreateProduct", "create_customer", "create_product"]


def task_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"title": f"Task {next(_task_numbers)}"}
    return payload | overrides


@pytest.fixture
def create_task(client: AsyncClient) -> CreateTask:
    """Create a task through the API (as the superuser `client`) and return its body."""

    async def create(**overrides: Any) -> dict[str, Any]:
        response = await client.post(TASKS, json=task_payload(**overrides))
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    return create


@pytest.fixture
def set_status(client: AsyncClient) -> SetStatus:
    """PATCH a task's status, asserting it is accepted; the task's new body."""

    async def patch(task: dict[str, Any], status: str) -> dict[str, Any]:
        response = await client.patch(f"{TASKS}/{task['id']}", json={"status": status})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return patch
