from collections.abc import Awaitable, Callable
from itertools import count
from typing import Any

import pytest
from httpx import AsyncClient

_sku_numbers = count(1)

CreateProduct = Callable[..., Awaitable[dict[str, Any]]]


def product_payload(**overrides: Any) -> dict[str, Any]:
    number = next(_sku_numbers)
    payload: dict[str, Any] = {
        "sku": f"SKU-{number:05d}",
        "name": f"Product {number}",
        "price": "10.00",
        "stock_quantity": 5,
    }
    return payload | overrides


@pytest.fixture
def create_product(client: AsyncClient) -> CreateProduct:
    async def create(**overrides: Any) -> dict[str, Any]:
        response = await client.post("/api/v1/products", json=product_payload(**overrides))
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    return create
