"""The roles API (`/roles`, the `roles` module): roles and their module grants, and the rule
that nobody can hand out, through a role, a permission they do not hold. ETag, If-Match, 404
and id range: tests/core/test_versioned_resources_api.py."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.auth.models import Role, RoleGrant
from tests.support.database import stored
from tests.support.factories import PRODUCTS, ROLES, USERS, grant, role_payload
from tests.support.http import assert_problem
from tests.support.users import SignIn, create_user, user_with_grants

ROLE_FIELDS = {"id", "name", "description", "grants", "created_at", "updated_at", "version"}


# --- helpers --------------------------------------------------------------------------------


async def create_role(client: AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post(ROLES, json=role_payload(**overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def grants_by_module(body: dict[str, Any]) -> dict[str, list[str]]:
    """A role body's grants as module -> actions, checking no module appears twice."""
    grants = {item["module"]: item["actions"] for item in body["grants"]}
    assert len(grants) == len(body["grants"])
    return grants


async def stored_grants(session: AsyncSession, role_id: int) -> dict[str, list[str]]:
    result = await session.execute(
        select(col(RoleGrant.module), col(RoleGrant.actions)).where(
            col(RoleGrant.role_id) == role_id
        )
    )
    return {module: sorted(actions) for module, actions in result.all()}


async def role_count(session: AsyncSession, name: str) -> int:
    result = await session.scalar(
        select(func.count()).select_from(Role).where(func.lower(col(Role.name)) == name.lower())
    )
    return int(result or 0)


# --- POST /roles ----------------------------------------------------------------------------


async def test_create_role_returns_201_with_location_etag_and_grants(
    client: AsyncClient, session: AsyncSession
) -> None:
    payload = {
        "name": "warehouse",
        "description": "Stock keepers",
        "grants": [
            grant("products", "update", "create", "update"),
            grant("customers"),
            grant("tasks", "delete", "read", "create"),
        ],
    }

    response = await client.post(ROLES, json=payload)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == ROLE_FIELDS
    assert response.headers["location"] == f"{ROLES}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert (body["name"], body["description"], body["version"]) == ("warehouse", "Stock keepers", 1)
    expected = {
        "products": ["create", "update"],
        "customers": [],
        "tasks": ["create", "delete", "read"],
    }
    assert grants_by_module(body) == expected
    assert await stored_grants(session, body["id"]) == expected


async def test_create_role_without_grants_or_description(client: AsyncClient) -> None:
    response = await client.post(ROLES, json={"name": "empty"})

    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["description"], body["grants"]) == ("empty", None, [])


@pytest.mark.parametrize("duplicate", ["WAREHOUSE", "Warehouse", "  warehouse  "])
async def test_create_role_with_duplicate_name_in_any_case_returns_409(
    client: AsyncClient, session: AsyncSession, duplicate: str
) -> None:
    await create_role(client, name="warehouse")

    response = await client.post(ROLES, json=role_payload(name=duplicate))

    assert_problem(response, 409, "conflict")
    assert await role_count(session, "warehouse") == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"grants": [grant("payroll", "read")]}, "body.grants.0.module"),
        ({"grants": [grant("products", "approve")]}, "body.grants.0.actions.0"),
        ({"grants": [grant("products") | {"scope": "all"}]}, "body.grants.0.scope"),
        ({"grants": [{"actions": ["read"]}]}, "body.grants.0.module"),
        ({"grants": {"products": ["read"]}}, "body.grants"),
        ({"permissions": ["products:read"]}, "body.permissions"),
        ({"id": 7}, "body.id"),
        ({"version": 3}, "body.version"),
        ({"name": ""}, "body.name"),
        ({"name": "   "}, "body.name"),
        ({"name": "x" * 65}, "body.name"),
        ({"description": "x" * 501}, "body.description"),
    ],
)
async def test_create_role_with_invalid_or_unknown_field_returns_422_naming_it(
    client: AsyncClient, session: AsyncSession, overrides: dict[str, Any], field: str
) -> None:
    response = await client.post(ROLES, json=role_payload(name="rejected") | overrides)

    problem = assert_problem(response, 422, "validation-error")
    assert any(error["field"].startswith(field) for error in problem["errors"]), problem
    assert (await session.execute(select(Role))).first() is None


# --- GET /roles -----------------------------------------------------------------------------


async def test_list_roles_sorted_by_name_with_grants(client: AsyncClient) -> None:
    for name in ["delta", "alpha", "charlie", "bravo"]:
        await create_role(client, name=name, grants=[grant("tasks", "create")])

    response = await client.get(ROLES)

    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["name"] for item in items] == ["alpha", "bravo", "charlie", "delta"]
    assert all(set(item) == ROLE_FIELDS for item in items)
    assert all(item["grants"] == [grant("tasks", "create")] for item in items)
    assert response.json()["next_cursor"] is None


async def test_list_roles_sorted_by_name_descending(client: AsyncClient) -> None:
    for name in ["bravo", "alpha", "charlie"]:
        await create_role(client, name=name)

    response = await client.get(ROLES, params={"sort": "-name"})

    assert [item["name"] for item in response.json()["items"]] == ["charlie", "bravo", "alpha"]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", [["alpha", "bravo"], ["charlie", "delta"], ["echo"]]),
        ("-name", [["echo", "delta"], ["charlie", "bravo"], ["alpha"]]),
    ],
)
async def test_list_roles_pages_with_a_keyset_cursor(
    client: AsyncClient, sort: str, expected: list[list[str]]
) -> None:
    for name in ["echo", "delta", "alpha", "charlie", "bravo"]:
        await create_role(client, name=name)

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, "sort": sort} | ({"cursor": cursor} if cursor else {})
        response = await client.get(ROLES, params=params)
        assert response.status_code == 200, response.text
        pages.append([item["name"] for item in response.json()["items"]])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break

    assert pages == expected


async def test_list_roles_rejects_a_cursor_of_another_sort(client: AsyncClient) -> None:
    for name in ["alpha", "bravo", "charlie"]:
        await create_role(client, name=name)
    first = await client.get(ROLES, params={"limit": 1})

    response = await client.get(
        ROLES, params={"limit": 1, "sort": "-name", "cursor": first.json()["next_cursor"]}
    )

    assert_problem(response, 400, "invalid-cursor")


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"sort": "created_at"}])
async def test_list_roles_with_invalid_query_returns_422(
    client: AsyncClient, params: dict[str, Any]
) -> None:
    assert_problem(await client.get(ROLES, params=params), 422)


# --- GET /roles/{id} ------------------------------------------------------------------------


# --- PATCH /roles/{id} ----------------------------------------------------------------------


async def test_patch_role_name_and_description_keeps_grants(
    client: AsyncClient, session: AsyncSession
) -> None:
    created = await create_role(client, name="before", grants=[grant("tasks", "update")])

    response = await client.patch(
        f"{ROLES}/{created['id']}", json={"name": "after", "description": "Renamed"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["description"]) == ("after", "Renamed")
    assert grants_by_module(body) == {"tasks": ["update"]}
    assert body["version"] == 2
    assert response.headers["etag"] == '"2"'
    role = await stored(session, Role, created["id"])
    assert role is not None
    assert (role.name, role.description) == ("after", "Renamed")
    assert await stored_grants(session, created["id"]) == {"tasks": ["update"]}


async def test_patch_role_description_to_null_clears_it(client: AsyncClient) -> None:
    created = await create_role(client, description="to clear")

    response = await client.patch(f"{ROLES}/{created['id']}", json={"description": None})

    assert response.status_code == 200
    assert response.json()["description"] is None


async def test_patch_role_grants_replace_all_of_them_and_bump_version(
    client: AsyncClient, session: AsyncSession
) -> None:
    created = await create_role(
        client, grants=[grant("products", "create"), grant("customers", "delete")]
    )

    response = await client.patch(
        f"{ROLES}/{created['id']}", json={"grants": [grant("tasks", "update", "update")]}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert grants_by_module(body) == {"tasks": ["update"]}
    assert (body["name"], body["description"]) == (created["name"], created["description"])
    assert body["version"] == 2
    assert response.headers["etag"] == '"2"'
    assert await stored_grants(session, created["id"]) == {"tasks": ["update"]}


async def test_patch_role_with_empty_grants_removes_every_grant(
    client: AsyncClient, session: AsyncSession
) -> None:
    created = await create_role(client, grants=[grant("products", "create")])

    response = await client.patch(f"{ROLES}/{created['id']}", json={"grants": []})

    assert response.status_code == 200
    assert response.json()["grants"] == []
    assert await stored_grants(session, created["id"]) == {}


@pytest.mark.parametrize(
    "body",
    [
        {"grants": None},
        {"name": None},
        {"name": ""},
        {"grants": [grant("payroll")]},
        {"grants": [grant("products", "approve")]},
        {"version": 5},
        {"permissions": ["tasks:read"]},
    ],
)
async def test_patch_role_with_invalid_body_returns_422_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, body: dict[str, Any]
) -> None:
    created = await create_role(client, name="kept", grants=[grant("products", "update")])

    response = await client.patch(f"{ROLES}/{created['id']}", json=body)

    assert_problem(response, 422, "validation-error")
    role = await stored(session, Role, created["id"])
    assert role is not None
    assert (role.name, role.version) == ("kept", 1)
    assert await stored_grants(session, created["id"]) == {"products": ["update"]}


async def test_patch_role_to_a_taken_name_in_another_case_returns_409(
    client: AsyncClient, session: AsyncSession
) -> None:
    await create_role(client, name="taken")
    other = await create_role(client, name="other")

    response = await client.patch(f"{ROLES}/{other['id']}", json={"name": "TAKEN"})

    assert_problem(response, 409, "conflict")
    role = await stored(session, Role, other["id"])
    assert role is not None
    assert role.name == "other"


async def test_patch_role_grants_with_stale_if_match_returns_412_and_keeps_the_grants(
    client: AsyncClient, session: AsyncSession
) -> None:
    # The If-Match contract itself: tests/core/test_versioned_resources_api.py.
    created = await create_role(client, name="original", grants=[grant("products", "update")])

    response = await client.patch(
        f"{ROLES}/{created['id']}",
        json={"name": "lost update", "grants": [grant("tasks", "delete")]},
        headers={"If-Match": '"0"'},
    )

    assert_problem(response, 412, "precondition-failed")
    role = await stored(session, Role, created["id"])
    assert role is not None
    assert (role.name, role.version) == ("original", 1)
    assert await stored_grants(session, created["id"]) == {"products": ["update"]}


async def test_removing_a_grant_takes_effect_on_the_holders_next_request(
    client: AsyncClient, session: AsyncSession, sign_in: SignIn
) -> None:
    role = await create_role(client, grants=[grant("products"), grant("users")])
    holder_client = await sign_in(await create_user(session, roles=[role["name"]]))
    assert (await holder_client.get(USERS)).status_code == 200

    await client.patch(f"{ROLES}/{role['id']}", json={"grants": [grant("products")]})

    assert_problem(await holder_client.get(USERS), 403, "forbidden")
    assert (await holder_client.get(PRODUCTS)).status_code == 200


# --- DELETE /roles/{id} ---------------------------------------------------------------------


async def test_delete_role_removes_its_grants(client: AsyncClient, session: AsyncSession) -> None:
    created = await create_role(client)

    response = await client.delete(f"{ROLES}/{created['id']}")

    assert response.status_code == 204
    assert await stored_grants(session, created["id"]) == {}


async def test_deleting_a_role_takes_its_permissions_from_holders_at_once(
    client: AsyncClient, session: AsyncSession, sign_in: SignIn
) -> None:
    role = await create_role(client, grants=[grant("products")])
    holder = await create_user(session, roles=[role["name"]])
    holder_client = await sign_in(holder)
    assert (await holder_client.get(PRODUCTS)).status_code == 200

    await client.delete(f"{ROLES}/{role['id']}")

    assert_problem(await holder_client.get(PRODUCTS), 403, "forbidden")
    permissions = await client.get(f"{USERS}/{holder.id}/permissions")
    assert permissions.json()["permissions"] == []


# --- no privilege escalation through roles --------------------------------------------------


@pytest.fixture
async def role_admin_client(session: AsyncSession, sign_in: SignIn) -> AsyncClient:
    """May create, read and update roles, and read and update users, but not delete users."""
    actor = await user_with_grants(session, {"roles": ["create", "update"], "users": ["update"]})
    return await sign_in(actor)


async def test_creating_a_role_within_your_permissions_returns_201(
    role_admin_client: AsyncClient,
) -> None:
    response = await role_admin_client.post(
        ROLES, json=role_payload(grants=[grant("users", "update"), grant("roles")])
    )

    assert response.status_code == 201, response.text


async def test_creating_a_role_with_a_permission_you_lack_returns_403(
    role_admin_client: AsyncClient, session: AsyncSession
) -> None:
    response = await role_admin_client.post(
        ROLES, json=role_payload(name="escalator", grants=[grant("users", "update", "delete")])
    )

    problem = assert_problem(response, 403, "forbidden")
    assert "users:delete" in problem["detail"]
    assert "users:update" not in problem["detail"]
    assert await role_count(session, "escalator") == 0


async def test_patching_a_role_within_your_permissions_returns_200(
    client: AsyncClient, role_admin_client: AsyncClient
) -> None:
    created = await create_role(client, grants=[grant("roles")])

    response = await role_admin_client.patch(
        f"{ROLES}/{created['id']}", json={"grants": [grant("users", "update")]}
    )

    assert response.status_code == 200, response.text
    assert grants_by_module(response.json()) == {"users": ["update"]}


async def test_patching_a_role_to_add_a_permission_you_lack_returns_403_and_changes_nothing(
    client: AsyncClient, role_admin_client: AsyncClient, session: AsyncSession
) -> None:
    created = await create_role(client, grants=[grant("roles")])

    response = await role_admin_client.patch(
        f"{ROLES}/{created['id']}",
        json={"grants": [grant("roles"), grant("users", "delete")]},
    )

    problem = assert_problem(response, 403, "forbidden")
    assert "users:delete" in problem["detail"]
    role = await stored(session, Role, created["id"])
    assert role is not None
    assert role.version == 1
    assert await stored_grants(session, created["id"]) == {"roles": []}


async def test_renaming_a_role_with_a_permission_you_lack_returns_403(
    client: AsyncClient, role_admin_client: AsyncClient, session: AsyncSession
) -> None:
    created = await create_role(client, name="auditors", grants=[grant("audit")])

    response = await role_admin_client.patch(f"{ROLES}/{created['id']}", json={"name": "renamed"})

    problem = assert_problem(response, 403, "forbidden")
    assert "audit:read" in problem["detail"]
    role = await stored(session, Role, created["id"])
    assert role is not None
    assert (role.name, role.version) == ("auditors", 1)


async def test_deleting_a_role_with_a_permission_you_lack_returns_403(
    client: AsyncClient, session: AsyncSession, sign_in: SignIn
) -> None:
    created = await create_role(client, grants=[grant("audit", "read")])
    actor_client = await sign_in(await user_with_grants(session, {"roles": ["delete"]}))

    response = await actor_client.delete(f"{ROLES}/{created['id']}")

    problem = assert_problem(response, 403, "forbidden")
    assert "audit:read" in problem["detail"]
    assert await stored(session, Role, created["id"]) is not None


# --- RBAC on /roles -------------------------------------------------------------------------

Route = tuple[str, str, dict[str, Any] | None]
ROLE_ROUTES: list[Route] = [
    ("GET", ROLES, None),
    ("POST", ROLES, {"name": "made-by-intruder"}),
    ("GET", f"{ROLES}/{{id}}", None),
    ("PATCH", f"{ROLES}/{{id}}", {"name": "made-by-intruder"}),
    ("DELETE", f"{ROLES}/{{id}}", None),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ROLE_ROUTES]


@pytest.mark.parametrize("route", ROLE_ROUTES, ids=ROUTE_IDS)
async def test_a_viewer_gets_403_on_roles(
    client: AsyncClient,
    session: AsyncSession,
    sign_in: SignIn,
    route: Route,
) -> None:
    method, path, body = route
    target = await create_role(client, name="target")
    viewer_client = await sign_in(await create_user(session, roles=["viewer"]))

    response = await viewer_client.request(method, path.format(id=target["id"]), json=body)

    problem = assert_problem(response, 403, "forbidden")
    assert "roles:" in problem["detail"]
    role = await stored(session, Role, target["id"])
    assert role is not None
    assert (role.name, role.version) == ("target", 1)
    assert await role_count(session, "made-by-intruder") == 0


@pytest.mark.parametrize("route", ROLE_ROUTES, ids=ROUTE_IDS)
async def test_anonymous_gets_401_on_roles(
    client: AsyncClient,
    anonymous_client: AsyncClient,
    session: AsyncSession,
    route: Route,
) -> None:
    method, path, body = route
    target = await create_role(client, name="target")

    response = await anonymous_client.request(method, path.format(id=target["id"]), json=body)

    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    role = await stored(session, Role, target["id"])
    assert role is not None
    assert role.version == 1
    assert await role_count(session, "made-by-intruder") == 0


async def test_roles_read_alone_allows_reading_but_not_changing(
    client: AsyncClient, session: AsyncSession, sign_in: SignIn
) -> None:
    target = await create_role(client, name="target", grants=[])
    reader_client = await sign_in(await user_with_grants(session, {"roles": []}))

    listed = await reader_client.get(ROLES)
    read = await reader_client.get(f"{ROLES}/{target['id']}")
    created = await reader_client.post(ROLES, json={"name": "made-by-intruder"})
    patched = await reader_client.patch(f"{ROLES}/{target['id']}", json={"name": "changed"})
    deleted = await reader_client.delete(f"{ROLES}/{target['id']}")

    assert (listed.status_code, read.status_code) == (200, 200)
    for response in (created, patched, deleted):
        assert_problem(response, 403, "forbidden")
    role = await stored(session, Role, target["id"])
    assert role is not None
    assert (role.name, role.version) == ("target", 1)


async def test_a_module_granted_twice_gets_the_actions_of_both(
    client: AsyncClient, session: AsyncSession
) -> None:
    created = await create_role(
        client, name="merged", grants=[grant("tasks", "create"), grant("tasks", "delete")]
    )

    assert created["grants"] == [{"module": "tasks", "actions": ["create", "delete"]}]
