"""Request bodies for the business resources, each unique where the resource needs it (SKU,
email, role name), and the paths of their collections. The fixtures that POST them live in
tests/conftest.py."""

from collections.abc import Awaitable, Callable
from itertools import count
from typing import Any

from httpx import AsyncClient

PRODUCTS = "/api/v1/products"
CUSTOMERS = "/api/v1/customers"
TASKS = "/api/v1/tasks"
USERS = "/api/v1/users"
ROLES = "/api/v1/roles"

# A factory fixture: creates one resource through the API and returns its body.
Create = Callable[..., Awaitable[dict[str, Any]]]
CreateProduct = Create
CreateCustomer = Create
CreateTask = Create
# PATCHes a task's status, asserting it is accepted; the task's new body.
SetStatus = Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]]

_sku_numbers = count(1)
_customer_numbers = count(1)
_task_numbers = count(1)
_role_numbers = count(1)
_user_numbers = count(1)


def product_payload(**overrides: Any) -> dict[str, Any]:
    number = next(_sku_numbers)
    payload: dict[str, Any] = {
        "sku": f"SKU-{number:05d}",
        "name": f"Product {number}",
        "price": "10.00",
        "stock_quantity": 5,
    }
    return payload | overrides


def customer_payload(**overrides: Any) -> dict[str, Any]:
    number = next(_customer_numbers)
    payload: dict[str, Any] = {
        "name": f"Customer {number}",
        "email": f"customer{number}@example.com",
    }
    return payload | overrides


def task_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"title": f"Task {next(_task_numbers)}"}
    return payload | overrides


def grant(module: str, *actions: str) -> dict[str, Any]:
    return {"module": module, "actions": list(actions)}


def role_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": f"role-{next(_role_numbers)}",
        "description": "Does things",
        "grants": [grant("products", "update")],
    }
    return payload | overrides


def user_payload(**overrides: Any) -> dict[str, Any]:
    number = next(_user_numbers)
    payload: dict[str, Any] = {
        "email": f"person{number}@example.com",
        "password": "a long enough passphrase",
        "full_name": f"Person {number}",
    }
    return payload | overrides


def creator(client: AsyncClient, url: str, payload: Callable[..., dict[str, Any]]) -> Create:
    """A factory fixture's body: POSTs `payload(**overrides)` to `url`, asserting a 201."""

    async def create(**overrides: Any) -> dict[str, Any]:
        response = await client.post(url, json=payload(**overrides))
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    return create
