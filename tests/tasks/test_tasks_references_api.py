"""A task's references (assignee, customer, product): checked when set, reported together when
missing, shown as summaries that follow the referenced rows, and guarding those rows against
deletion."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.tasks.models import Task
from tests.support.database import stored
from tests.support.factories import (
    CUSTOMERS,
    PRODUCTS,
    TASKS,
    USERS,
    CreateCustomer,
    CreateProduct,
    CreateTask,
    task_payload,
)
from tests.support.http import assert_problem
from tests.support.tasks import REFERENCES, task_count
from tests.support.users import create_user

MISSING_ID = 2**31 - 1


def error_fields(problem: dict[str, Any]) -> dict[str, str]:
    return {error["field"]: error["type"] for error in problem["errors"]}


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
