"""A user's roles (`PUT /users/{id}/roles`, never granting more than you hold) and the
permissions they add up to (`GET /users/{id}/permissions`), in effect on the next request."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from tests.support.factories import PRODUCTS, USERS
from tests.support.http import assert_problem
from tests.support.users import SignIn, create_user, store_role, stored_role_ids, user_with_grants

VIEWER_PERMISSIONS = ["customers:read", "products:read", "tasks:read"]


# --- PUT /users/{id}/roles ------------------------------------------------------------------


@pytest.fixture
async def user_admin_client(session: AsyncSession, sign_in: SignIn) -> AsyncClient:
    """May update users and read roles; holds no products permission."""
    return await sign_in(await user_with_grants(session, {"users": ["update"], "roles": ["read"]}))


@pytest.mark.parametrize("with_allowed_role", [False, True], ids=["alone", "with-an-allowed-one"])
async def test_assigning_a_role_that_grants_more_than_you_hold_returns_403_and_changes_nothing(
    user_admin_client: AsyncClient, session: AsyncSession, with_allowed_role: bool
) -> None:
    target = await create_user(session)
    remover, _ = await store_role(session, {"products": ["delete"]})
    reader, _ = await store_role(session, {"roles": ["read"]})
    role_ids = [reader, remover] if with_allowed_role else [remover]

    response = await user_admin_client.put(
        f"{USERS}/{target.id}/roles", json={"role_ids": role_ids}
    )

    problem = assert_problem(response, 403, "forbidden")
    assert "products:delete" in problem["detail"]
    assert await stored_role_ids(session, target.id) == set()


async def test_assigning_a_role_within_your_permissions_returns_200(
    user_admin_client: AsyncClient, session: AsyncSession
) -> None:
    target = await create_user(session)
    reader, name = await store_role(session, {"roles": ["read"]})

    response = await user_admin_client.put(
        f"{USERS}/{target.id}/roles", json={"role_ids": [reader]}
    )

    assert response.status_code == 200, response.text
    [role] = response.json()
    assert (role["id"], role["name"]) == (reader, name)
    assert role["grants"] == [{"module": "roles", "actions": ["read"]}]
    assert await stored_role_ids(session, target.id) == {reader}


async def test_removing_a_role_that_grants_more_than_you_hold_returns_403(
    user_admin_client: AsyncClient, session: AsyncSession
) -> None:
    target = await user_with_grants(session, {"products": ["delete"]})
    before = await stored_role_ids(session, target.id)

    response = await user_admin_client.put(f"{USERS}/{target.id}/roles", json={"role_ids": []})

    assert_problem(response, 403, "forbidden")
    assert await stored_role_ids(session, target.id) == before


async def test_put_roles_replaces_the_users_roles(
    client: AsyncClient, session: AsyncSession
) -> None:
    target = await create_user(session, roles=["viewer"])
    first, _ = await store_role(session, {"products": ["update"]})
    second, _ = await store_role(session, {"tasks": []})

    response = await client.put(f"{USERS}/{target.id}/roles", json={"role_ids": [second, first]})

    assert response.status_code == 200
    assert [role["id"] for role in response.json()] == sorted([first, second])
    assert await stored_role_ids(session, target.id) == {first, second}


async def test_put_roles_with_an_empty_list_removes_every_role(
    client: AsyncClient, session: AsyncSession
) -> None:
    target = await create_user(session, roles=["viewer", "manager"])

    response = await client.put(f"{USERS}/{target.id}/roles", json={"role_ids": []})

    assert response.status_code == 200
    assert response.json() == []
    assert await stored_role_ids(session, target.id) == set()


async def test_put_roles_with_a_missing_role_id_returns_422_naming_it(
    client: AsyncClient, session: AsyncSession
) -> None:
    target = await create_user(session)
    real, _ = await store_role(session, {"tasks": []})

    response = await client.put(f"{USERS}/{target.id}/roles", json={"role_ids": [real, 987654]})

    problem = assert_problem(response, 422)
    assert "987654" in problem["detail"]
    assert str(real) not in problem["detail"]
    assert await stored_role_ids(session, target.id) == set()


async def test_put_roles_with_duplicate_ids_returns_422(
    client: AsyncClient, session: AsyncSession
) -> None:
    target = await create_user(session)
    role_id, _ = await store_role(session, {"tasks": []})

    response = await client.put(f"{USERS}/{target.id}/roles", json={"role_ids": [role_id, role_id]})

    problem = assert_problem(response, 422, "validation-error")
    assert "body.role_ids" in {error["field"] for error in problem["errors"]}
    assert await stored_role_ids(session, target.id) == set()


@pytest.mark.parametrize(
    "body",
    [{"role_ids": [0]}, {"role_ids": ["1"]}, {"role_ids": None}, {}, {"role_ids": [], "x": 1}],
)
async def test_put_roles_with_invalid_body_returns_422(
    client: AsyncClient, session: AsyncSession, body: dict[str, Any]
) -> None:
    target = await create_user(session, roles=["viewer"])
    before = await stored_role_ids(session, target.id)

    response = await client.put(f"{USERS}/{target.id}/roles", json=body)

    assert_problem(response, 422, "validation-error")
    assert await stored_role_ids(session, target.id) == before


async def test_put_roles_of_a_missing_user_returns_404(client: AsyncClient) -> None:
    assert_problem(await client.put(f"{USERS}/999999/roles", json={"role_ids": []}), 404)


# --- GET /users/{id}/permissions ------------------------------------------------------------


async def permissions_of(client: AsyncClient, user: User) -> list[str]:
    response = await client.get(f"{USERS}/{user.id}/permissions")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user.id
    assert body["is_superuser"] is user.is_superuser
    permissions: list[str] = body["permissions"]
    return permissions


async def test_permissions_of_a_viewer_are_reading_the_business_modules(
    client: AsyncClient, session: AsyncSession
) -> None:
    viewer = await create_user(session, roles=["viewer"])

    assert await permissions_of(client, viewer) == VIEWER_PERMISSIONS


async def test_permissions_of_a_grant_include_read(
    client: AsyncClient, session: AsyncSession
) -> None:
    user = await user_with_grants(session, {"products": ["update"]})

    assert await permissions_of(client, user) == ["products:read", "products:update"]


async def test_permissions_are_the_union_over_every_role(
    client: AsyncClient, session: AsyncSession
) -> None:
    user = await user_with_grants(
        session, {"products": ["create"]}, {"products": ["delete"], "customers": []}
    )

    assert await permissions_of(client, user) == [
        "customers:read",
        "products:create",
        "products:delete",
        "products:read",
    ]


async def test_permissions_of_a_user_without_roles_are_none(
    client: AsyncClient, session: AsyncSession
) -> None:
    assert await permissions_of(client, await create_user(session)) == []


async def test_permissions_of_a_superuser_are_all_24(
    client: AsyncClient, session: AsyncSession
) -> None:
    root = await create_user(session, is_superuser=True)
    modules = ["audit", "customers", "products", "roles", "tasks", "users"]
    actions = ["create", "delete", "read", "update"]

    permissions = await permissions_of(client, root)

    assert permissions == [f"{module}:{action}" for module in modules for action in actions]
    assert len(permissions) == 24


async def test_permissions_of_a_missing_user_returns_404(client: AsyncClient) -> None:
    assert_problem(await client.get(f"{USERS}/999999/permissions"), 404)


async def test_permissions_take_effect_on_the_next_request(
    client: AsyncClient, session: AsyncSession, sign_in: SignIn
) -> None:
    user = await create_user(session)
    user_client = await sign_in(user)
    assert_problem(await user_client.get(PRODUCTS), 403)
    reader, _ = await store_role(session, {"products": []})

    await client.put(f"{USERS}/{user.id}/roles", json={"role_ids": [reader]})

    assert (await user_client.get(PRODUCTS)).status_code == 200
