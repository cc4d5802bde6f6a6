import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.factories import CreateCustomer, CreateProduct
from tests.support.users import create_user


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
