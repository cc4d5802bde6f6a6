"""A task shows a referenced user's, customer's or product's details only to a caller who may
read that module; anyone else sees the id, and gets one answer for every reason a reference is
refused, so task routes cannot be used to probe other modules."""

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from itertools import count
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import Role
from backoffice.auth.repository import RoleRepository
from backoffice.core.config import Settings
from tests.support.factories import TASKS, CreateCustomer, CreateProduct, task_payload
from tests.support.http import api_client, assert_problem
from tests.support.users import create_user, tokens_for

MISSING_ID = 2**31 - 1
# Each reference field, the module that guards what it points to, and its summary's key.
REFERENCES = [
    ("assignee_id", "users", "assignee"),
    ("customer_id", "customers", "customer"),
    ("product_id", "products", "product"),
]
ALL_TASK_ACTIONS = ["read", "create", "update", "delete"]

_role_numbers = count(1)

SignIn = Callable[[Mapping[str, list[str]]], Awaitable[AsyncClient]]


def customer_tasks(customer_id: int) -> str:
    return f"/api/v1/customers/{customer_id}/tasks"


@pytest.fixture
async def sign_in(app: FastAPI, session: AsyncSession, settings: Settings) -> AsyncIterator[SignIn]:
    """Clients signed in as a new user holding one custom role with these grants."""
    async with AsyncExitStack() as clients:

        async def sign_in(grants: Mapping[str, list[str]]) -> AsyncClient:
            role = Role(name=f"visibility-{next(_role_numbers)}")
            session.add(role)
            await session.flush()
            assert role.id is not None
            await RoleRepository(session).replace_grants(role.id, dict(grants))
            await session.commit()
            user = await create_user(session, roles=[role.name])
            pair = await tokens_for(session, settings, user)
            return await clients.enter_async_context(api_client(app, pair.access_token))

        yield sign_in


@pytest.fixture
async def references(
    session: AsyncSession, create_customer: CreateCustomer, create_product: CreateProduct
) -> dict[str, int]:
    """An existing active user, customer and product, as a task's reference fields."""
    assignee = await create_user(session, email="assignee@example.com")
    assert assignee.id is not None
    customer = await create_customer(name="Grace Hopper", company="Navy Labs")
    item = await create_product(sku="KB-9", name="Keyboard")
    return {"assignee_id": assignee.id, "customer_id": customer["id"], "product_id": item["id"]}


def task_answers(created: Response, *later: Response) -> list[dict[str, Any]]:
    """Every task in these answers: single tasks and the items of list pages."""
    tasks = []
    for response in (created, *later):
        assert response.status_code in {200, 201}, response.text
        body = response.json()
        tasks += body.get("items", [body])
    return tasks


def without_ids(problem: dict[str, Any], *ids: int) -> dict[str, Any]:
    """What a problem says, with the ids it names blanked: two answers about different ids
    compare equal only if nothing else tells them apart."""
    text = repr({key: problem[key] for key in ("type", "title", "status", "detail", "errors")})
    for entity_id in ids:
        text = text.replace(str(entity_id), "<id>")
    return {"said": text}


# --- summaries --------------------------------------------------------------------------------


async def test_viewer_sees_assignee_ids_but_no_assignee_details(
    client: AsyncClient,
    session: AsyncSession,
    app: FastAPI,
    settings: Settings,
    references: dict[str, int],
) -> None:
    created = (await client.post(TASKS, json=task_payload(**references))).json()
    assert created["assignee"]["email"] == "assignee@example.com"  # the superuser sees it
    viewer = await create_user(session, roles=["viewer"])
    pair = await tokens_for(session, settings, viewer)

    async with api_client(app, pair.access_token) as viewer_client:
        answers = task_answers(
            await viewer_client.get(f"{TASKS}/{created['id']}"),
            await viewer_client.get(TASKS),
            await viewer_client.get(customer_tasks(references["customer_id"])),
        )

    assert len(answers) == 3
    for task in answers:
        assert task["assignee_id"] == references["assignee_id"]
        assert task["assignee"] is None
        # The viewer reads customers and products, so those summaries stay.
        assert task["customer"] == created["customer"]
        assert task["product"] == created["product"]
        assert "assignee@example.com" not in repr(task)


@pytest.mark.parametrize("readable", [True, False], ids=["may-read", "may-not-read"])
@pytest.mark.parametrize(("field", "module", "summary"), REFERENCES, ids=[r[1] for r in REFERENCES])
async def test_a_summary_shows_in_every_task_answer_only_to_readers_of_its_module(
    sign_in: SignIn,
    client: AsyncClient,
    references: dict[str, int],
    field: str,
    module: str,
    summary: str,
    readable: bool,
) -> None:
    # Full rights on tasks and read on the other referenced modules; this one only if readable.
    grants = {"tasks": ALL_TASK_ACTIONS} | {
        other: ["read"] for _, other, _ in REFERENCES if other != module or readable
    }
    caller = await sign_in(grants)
    expected = (await client.post(TASKS, json=task_payload(**references))).json()[summary]

    created = await caller.post(TASKS, json=task_payload(**references))
    task_id = created.json()["id"]
    answers = task_answers(
        created,
        await caller.get(f"{TASKS}/{task_id}"),
        await caller.get(TASKS, params={field: references[field]}),
        await caller.get(customer_tasks(references["customer_id"])),
        await caller.patch(f"{TASKS}/{task_id}", json={"title": "Renamed"}),
        await caller.patch(f"{TASKS}/{task_id}", json={field: references[field]}),
    )

    assert len(answers) == 8  # 2 tasks in each list
    for task in answers:
        assert task[field] == references[field]
        assert task[summary] == (expected if readable else None)
        # Whatever the caller may not read of one module never hides another's summary.
        for other_field, _, other_summary in REFERENCES:
            if other_field != field:
                assert task[other_summary] is not None


async def test_a_task_list_for_a_caller_who_reads_no_other_module_joins_nothing(
    sign_in: SignIn, client: AsyncClient, references: dict[str, int], statements: list[str]
) -> None:
    await client.post(TASKS, json=task_payload(**references))
    caller = await sign_in({"tasks": []})
    statements.clear()

    response = await caller.get(TASKS)

    assert response.status_code == 200, response.text
    assert len(statements) == 2, statements  # who you are; the page
    assert "JOIN" not in statements[-1], statements[-1]  # other modules' rows are never read
    (task,) = response.json()["items"]
    assert (task["assignee"], task["customer"], task["product"]) == (None, None, None)


# --- refused references -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_caller_who_cannot_read_users_gets_one_answer_for_missing_and_inactive_users(
    sign_in: SignIn, client: AsyncClient, session: AsyncSession, method: str
) -> None:
    caller = await sign_in({"tasks": ALL_TASK_ACTIONS})
    inactive = await create_user(session, email="inactive@example.com", is_active=False)
    active = await create_user(session, email="active@example.com")
    assert inactive.id is not None
    assert active.id is not None
    task = (await client.post(TASKS, json=task_payload())).json()

    async def assign(user_id: int) -> Response:
        if method == "POST":
            return await caller.post(TASKS, json=task_payload(assignee_id=user_id))
        return await caller.patch(f"{TASKS}/{task['id']}", json={"assignee_id": user_id})

    missing = assert_problem(await assign(MISSING_ID), 422, "invalid-input")
    refused = assert_problem(await assign(inactive.id), 422, "invalid-input")
    accepted = await assign(active.id)

    assert without_ids(missing, MISSING_ID) == without_ids(refused, inactive.id)
    assert refused["errors"] == [
        {
            "field": "body.assignee_id",
            "message": f"User {inactive.id} cannot be assigned.",
            "type": "invalid_reference",
        }
    ]
    assert accepted.status_code in {200, 201}, accepted.text
    assert accepted.json()["assignee_id"] == active.id
    assert accepted.json()["assignee"] is None
    assert "active@example.com" not in accepted.text


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_caller_who_reads_users_learns_why_an_assignee_is_refused(
    sign_in: SignIn, client: AsyncClient, session: AsyncSession, method: str
) -> None:
    caller = await sign_in({"tasks": ALL_TASK_ACTIONS, "users": ["read"]})
    inactive = await create_user(session, is_active=False)
    assert inactive.id is not None
    task = (await client.post(TASKS, json=task_payload())).json()

    async def assign(user_id: int) -> Response:
        if method == "POST":
            return await caller.post(TASKS, json=task_payload(assignee_id=user_id))
        return await caller.patch(f"{TASKS}/{task['id']}", json={"assignee_id": user_id})

    missing = assert_problem(await assign(MISSING_ID), 422, "invalid-input")
    refused = assert_problem(await assign(inactive.id), 422, "invalid-input")

    assert missing["errors"] == [
        {
            "field": "body.assignee_id",
            "message": f"User {MISSING_ID} does not exist.",
            "type": "reference_not_found",
        }
    ]
    assert refused["errors"] == [
        {
            "field": "body.assignee_id",
            "message": f"User {inactive.id} is inactive and cannot be assigned.",
            "type": "inactive",
        }
    ]


@pytest.mark.parametrize(
    ("readable", "message", "kind"),
    [
        (True, "{entity} {id} does not exist.", "reference_not_found"),
        (False, "{entity} {id} cannot be referred to.", "invalid_reference"),
    ],
    ids=["may-read", "may-not-read"],
)
@pytest.mark.parametrize(
    ("field", "module", "entity"),
    [("customer_id", "customers", "Customer"), ("product_id", "products", "Product")],
    ids=["customers", "products"],
)
async def test_a_missing_customer_or_product_is_named_only_to_readers_of_its_module(
    sign_in: SignIn,
    references: dict[str, int],
    field: str,
    module: str,
    entity: str,
    readable: bool,
    message: str,
    kind: str,
) -> None:
    caller = await sign_in({"tasks": ALL_TASK_ACTIONS} | ({module: ["read"]} if readable else {}))

    refused = await caller.post(TASKS, json=task_payload(**{field: MISSING_ID}))
    accepted = await caller.post(TASKS, json=task_payload(**{field: references[field]}))

    problem = assert_problem(refused, 422, "invalid-input")
    expected = message.format(entity=entity, id=MISSING_ID)
    assert problem["errors"] == [{"field": f"body.{field}", "message": expected, "type": kind}]
    assert problem["detail"] == f"{field}: {expected}"
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()[field] == references[field]


async def test_a_customers_task_list_is_a_404_only_for_readers_of_customers(
    sign_in: SignIn, create_customer: CreateCustomer
) -> None:
    tasks_only = await sign_in({"tasks": []})
    customer_reader = await sign_in({"tasks": [], "customers": ["read"]})
    without_tasks = await create_customer()

    # To a caller who cannot read customers, a missing one looks like one without tasks.
    missing = await tasks_only.get(customer_tasks(MISSING_ID))
    existing = await tasks_only.get(customer_tasks(without_tasks["id"]))

    assert missing.status_code == existing.status_code == 200
    assert missing.json() == existing.json() == {"items": [], "next_cursor": None}
    assert_problem(await customer_reader.get(customer_tasks(MISSING_ID)), 404, "not-found")
