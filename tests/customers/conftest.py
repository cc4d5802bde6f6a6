from collections.abc import Awaitable, Callable
from itertools import count
from typing import Any

import pytest
from httpx import AsyncClient

CUSTOMERS = "/api/v1/customers"

_customer_numbers = count(1)

CreateCustomer = Callable[..., Awaitable[dict[str, Any]]]


def customer_payload(**overrides: Any) -> dict[str, Any]:
    number = next(_customer_numbers)
    payload: dict[str, Any] = {
        "name": f"Customer {number}",
        "email": f"customer{number}@example.com",
    }
    return payload | overrides


@pytest.fixture
def create_customer(client: AsyncClient) -> CreateCustomer:
    """Create a customer through the API (as the superuser `client`) and return its body."""

    async def create(**overrides: Any) -> dict[str, Any]:
        response = await client.post(CUSTOMERS, json=customer_payload(**overrides))
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    return create
