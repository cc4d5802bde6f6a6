"""Who may administer whom: the `users` permissions on every route, and the rule that nobody
raises their own privileges or manages an account that holds more than they do."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from tests.support.database import stored
from tests.support.factories import USERS
from tests.support.http import assert_problem
from tests.support.users import (
    ME,
    NEW_PASSWORD,
    SignIn,
    create_user,
    store_role,
    stored_role_ids,
    user_body,
    user_count,
    user_with_grants,
)

# --- no privilege escalation ----------------------------------------------------------------


@pytest.fixture
async def admin(session: AsyncSession) -> User:
    """Not a superuser, but every permission of every module through the admin role."""
    return await create_user(session, email="admin@example.com", roles=["admin"])


@pytest.fixture
async def admin_client(admin: User, sign_in: SignIn) -> AsyncClient:
    return await sign_in(admin)


async def test_admin_can_update_a_regular_user(
    admin_client: AsyncClient, session: AsyncSession
) -> None:
    user = await create_user(session, roles=["viewer"])

    response = await admin_client.patch(f"{USERS}/{user.id}", json={"full_name": "Fine"})

    assert response.status_code == 200


async def test_admin_cannot_make_another_user_superuser(
    admin_client: AsyncClient, session: AsyncSession
) -> None:
    user = await create_user(session, roles=["viewer"])

    response = await admin_client.patch(f"{USERS}/{user.id}", json={"is_superuser": True})

    assert_problem(response, 403, "forbidden")
    row = await stored(session, User, user.id)
    assert row is not None
    assert (row.is_superuser, row.version) == (False, 1)


async def test_admin_cannot_make_themselves_superuser(
    admin_client: AsyncClient, session: AsyncSession, admin: User
) -> None:
    response = await admin_client.patch(f"{USERS}/{admin.id}", json={"is_superuser": True})

    assert_problem(response, 403, "forbidden")
    row = await stored(session, User, admin.id)
    assert row is not None
    assert (row.is_superuser, row.version) == (False, 1)


@pytest.mark.parametrize(
    "body",
    [{"full_name": "Owned"}, {"email": "owned@example.com"}, {"is_active": False}],
)
async def test_admin_cannot_patch_a_superuser(
    admin_client: AsyncClient, session: AsyncSession, superuser: User, body: dict[str, Any]
) -> None:
    response = await admin_client.patch(f"{USERS}/{superuser.id}", json=body)

    assert_problem(response, 403, "forbidden")
    row = await stored(session, User, superuser.id)
    assert row is not None
    assert (row.full_name, row.email, row.is_active, row.version) == (
        "Test User",
        "root@example.com",
        True,
        1,
    )


async def test_admin_cannot_delete_a_superuser(
    admin_client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    response = await admin_client.delete(f"{USERS}/{superuser.id}")

    assert_problem(response, 403, "forbidden")
    assert await stored(session, User, superuser.id) is not None


async def test_admin_cannot_change_a_superusers_roles(
    admin_client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    role_id, _ = await store_role(session, {"products": []})

    response = await admin_client.put(f"{USERS}/{superuser.id}/roles", json={"role_ids": [role_id]})

    assert_problem(response, 403, "forbidden")
    assert await stored_role_ids(session, superuser.id) == set()


@pytest.mark.parametrize("keep_admin", [True, False], ids=["add-a-role", "drop-every-role"])
async def test_admin_cannot_change_their_own_roles(
    admin_client: AsyncClient, session: AsyncSession, admin: User, keep_admin: bool
) -> None:
    own_roles = await stored_role_ids(session, admin.id)
    extra_role, _ = await store_role(session, {"audit": []})
    role_ids = [*own_roles, extra_role] if keep_admin else []

    response = await admin_client.put(f"{USERS}/{admin.id}/roles", json={"role_ids": role_ids})

    assert_problem(response, 403, "forbidden")
    assert await stored_role_ids(session, admin.id) == own_roles


@pytest.mark.parametrize("is_active", [False, True])
async def test_admin_cannot_change_their_own_active_status(
    admin_client: AsyncClient, session: AsyncSession, admin: User, is_active: bool
) -> None:
    response = await admin_client.patch(f"{USERS}/{admin.id}", json={"is_active": is_active})

    assert_problem(response, 403, "forbidden")
    row = await stored(session, User, admin.id)
    assert row is not None
    assert (row.is_active, row.version) == (True, 1)
    assert (await admin_client.get(ME)).status_code == 200


async def test_superuser_cannot_deactivate_themselves(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    response = await client.patch(f"{USERS}/{superuser.id}", json={"is_active": False})

    assert_problem(response, 403, "forbidden")
    row = await stored(session, User, superuser.id)
    assert row is not None
    assert row.is_active is True


async def test_superuser_can_make_another_user_superuser(
    client: AsyncClient, session: AsyncSession
) -> None:
    user = await create_user(session)

    response = await client.patch(f"{USERS}/{user.id}", json={"is_superuser": True})

    assert response.status_code == 200
    assert user_body(response)["is_superuser"] is True
    row = await stored(session, User, user.id)
    assert row is not None
    assert row.is_superuser is True


@pytest.mark.parametrize(
    ("method", "body", "allowed_status"),
    [
        ("PATCH", {"is_active": False}, 200),
        ("PATCH", {"email": "taken-over@example.com"}, 200),
        ("DELETE", None, 204),
    ],
)
async def test_a_user_admin_cannot_manage_an_account_with_permissions_they_lack(
    session: AsyncSession,
    sign_in: SignIn,
    method: str,
    body: dict[str, Any] | None,
    allowed_status: int,
) -> None:
    actor_client = await sign_in(await user_with_grants(session, {"users": ["update", "delete"]}))
    viewer = await create_user(session, email="viewer@example.com", roles=["viewer"])
    powerless = await create_user(session)

    refused = await actor_client.request(method, f"{USERS}/{viewer.id}", json=body)
    allowed = await actor_client.request(method, f"{USERS}/{powerless.id}", json=body)

    problem = assert_problem(refused, 403, "forbidden")
    assert "products:read" in problem["detail"]
    row = await stored(session, User, viewer.id)
    assert row is not None
    assert (row.email, row.is_active, row.version) == ("viewer@example.com", True, 1)
    assert allowed.status_code == allowed_status, allowed.text


# --- RBAC on /users -------------------------------------------------------------------------

Route = tuple[str, str, dict[str, Any] | None]
ADMIN_ROUTES: list[Route] = [
    ("GET", USERS, None),
    ("POST", USERS, {"email": "made@example.com", "password": NEW_PASSWORD, "full_name": "M"}),
    ("GET", f"{USERS}/{{id}}", None),
    ("PATCH", f"{USERS}/{{id}}", {"full_name": "Changed"}),
    ("DELETE", f"{USERS}/{{id}}", None),
    ("PUT", f"{USERS}/{{id}}/roles", {"role_ids": []}),
    ("GET", f"{USERS}/{{id}}/permissions", None),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ADMIN_ROUTES]


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=ROUTE_IDS)
async def test_a_viewer_gets_403_on_user_administration(
    session: AsyncSession,
    sign_in: SignIn,
    route: Route,
) -> None:
    method, path, body = route
    target = await create_user(session, email="target@example.com", roles=["viewer"])
    viewer_client = await sign_in(await create_user(session, roles=["viewer"]))

    response = await viewer_client.request(method, path.format(id=target.id), json=body)

    problem = assert_problem(response, 403, "forbidden")
    assert "users:" in problem["detail"]
    row = await stored(session, User, target.id)
    assert row is not None
    assert row.version == 1
    assert await stored_role_ids(session, target.id) != set()
    assert await user_count(session, "made@example.com") == 0


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=ROUTE_IDS)
async def test_anonymous_gets_401_on_user_administration(
    anonymous_client: AsyncClient,
    session: AsyncSession,
    route: Route,
) -> None:
    method, path, body = route
    target = await create_user(session)

    response = await anonymous_client.request(method, path.format(id=target.id), json=body)

    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await user_count(session, "made@example.com") == 0


async def test_users_read_alone_allows_reading_but_not_changing(
    session: AsyncSession, sign_in: SignIn
) -> None:
    target = await create_user(session)
    reader_client = await sign_in(await user_with_grants(session, {"users": []}))

    listed = await reader_client.get(USERS)
    read = await reader_client.get(f"{USERS}/{target.id}")
    created = await reader_client.post(
        USERS, json={"email": "made@example.com", "password": NEW_PASSWORD, "full_name": "M"}
    )
    patched = await reader_client.patch(f"{USERS}/{target.id}", json={"full_name": "Changed"})
    deleted = await reader_client.delete(f"{USERS}/{target.id}")

    assert (listed.status_code, read.status_code) == (200, 200)
    for response in (created, patched, deleted):
        assert_problem(response, 403, "forbidden")
    row = await stored(session, User, target.id)
    assert row is not None
    assert row.full_name == "Test User"
