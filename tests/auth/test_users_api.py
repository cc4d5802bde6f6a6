"""The users API: your own account under `/users/me`, and user administration under `/users`
(the `users` module), including the rule that nobody can raise their own privileges."""

from itertools import count
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.auth.models import Role, User, UserRole
from backoffice.auth.repository import RoleRepository
from backoffice.core.config import Settings
from tests.support.database import stored
from tests.support.http import assert_problem, bearer
from tests.support.users import TEST_PASSWORD, SignIn, create_user, login, tokens_for

USERS = "/api/v1/users"
ME = f"{USERS}/me"
MY_PASSWORD = f"{ME}/password"
REFRESH = "/api/v1/auth/tokens"
PRODUCTS = "/api/v1/products"

NEW_PASSWORD = "an entirely different passphrase"
USER_FIELDS = {
    "id",
    "email",
    "full_name",
    "is_active",
    "is_superuser",
    "locked_until",
    "created_at",
    "updated_at",
    "version",
}
VIEWER_PERMISSIONS = ["customers:read", "products:read", "tasks:read"]

_role_numbers = count(1)


# --- helpers --------------------------------------------------------------------------------


def password_change(current: str = TEST_PASSWORD, new: str = NEW_PASSWORD) -> dict[str, str]:
    return {"current_password": current, "new_password": new}


def user_body(response: Response) -> dict[str, Any]:
    """A user as the API shows it: exactly the public fields, never a password hash."""
    body: dict[str, Any] = response.json()
    assert set(body) == USER_FIELDS
    assert "$argon2" not in response.text
    return body


def user_page(response: Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    assert all(set(item) == USER_FIELDS for item in items)
    assert "$argon2" not in response.text
    return items


async def pages_of(client: AsyncClient, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of the user list, following `next_cursor` to the end."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        response = await client.get(USERS, params=params | ({"cursor": cursor} if cursor else {}))
        pages.append(user_page(response))
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return pages


async def stored_role_ids(session: AsyncSession, user_id: int | None) -> set[int]:
    result = await session.scalars(
        select(col(UserRole.role_id)).where(col(UserRole.user_id) == user_id)
    )
    return set(result)


async def store_role(session: AsyncSession, grants: dict[str, list[str]]) -> tuple[int, str]:
    """A stored role with these grants (module -> actions): its id and name."""
    role = Role(name=f"custom-{next(_role_numbers)}")
    session.add(role)
    await session.flush()
    assert role.id is not None
    await RoleRepository(session).replace_grants(role.id, grants)
    await session.commit()
    return role.id, role.name


async def user_with_grants(session: AsyncSession, *grant_sets: dict[str, list[str]]) -> User:
    """A user holding one custom role per grant set."""
    names = [(await store_role(session, grants))[1] for grants in grant_sets]
    return await create_user(session, roles=names)


async def user_count(session: AsyncSession, email: str) -> int:
    result = await session.scalar(
        select(func.count()).select_from(User).where(func.lower(col(User.email)) == email.lower())
    )
    return int(result or 0)


# --- GET/PATCH /users/me ----------------------------------------------------------------------


async def test_get_me_returns_the_caller_to_any_signed_in_user(
    session: AsyncSession, sign_in: SignIn
) -> None:
    viewer = await create_user(session, email="ada@example.com", roles=["viewer"])
    viewer_client = await sign_in(viewer)

    response = await viewer_client.get(ME)

    assert response.status_code == 200
    body = user_body(response)
    assert body["id"] == viewer.id
    assert body["email"] == "ada@example.com"
    assert (body["is_active"], body["is_superuser"]) == (True, False)
    assert response.headers["etag"] == f'"{body["version"]}"'


async def test_get_me_without_a_token_returns_401(anonymous_client: AsyncClient) -> None:
    response = await anonymous_client.get(ME)

    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_patch_me_changes_the_full_name(session: AsyncSession, sign_in: SignIn) -> None:
    user = await create_user(session, roles=["viewer"])
    user_client = await sign_in(user)

    response = await user_client.patch(ME, json={"full_name": "Ada Lovelace"})

    assert response.status_code == 200
    body = user_body(response)
    assert body["full_name"] == "Ada Lovelace"
    assert body["version"] == 2
    assert response.headers["etag"] == '"2"'
    row = await stored(session, User, user.id)
    assert row is not None
    assert row.full_name == "Ada Lovelace"


@pytest.mark.parametrize(
    "body",
    [
        {"full_name": "Mallory", "is_superuser": True},
        {"full_name": "Mallory", "is_active": False},
        {"full_name": "Mallory", "email": "mallory@example.com"},
        {"full_name": "Mallory", "hashed_password": "x"},
        {"is_superuser": True},
        {"full_name": ""},
        {"full_name": None},
        {},
    ],
)
async def test_patch_me_with_anything_but_a_valid_name_returns_422_and_changes_nothing(
    session: AsyncSession, sign_in: SignIn, body: dict[str, Any]
) -> None:
    user = await create_user(session, email="plain@example.com", roles=["viewer"])
    user_client = await sign_in(user)

    response = await user_client.patch(ME, json=body)

    assert_problem(response, 422, "validation-error")
    row = await stored(session, User, user.id)
    assert row is not None
    assert (row.full_name, row.email, row.is_superuser, row.is_active, row.version) == (
        "Test User",
        "plain@example.com",
        False,
        True,
        1,
    )


# --- PUT /users/me/password -----------------------------------------------------------------


async def test_change_password_returns_a_new_token_pair_that_works(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await create_user(session)
    old = await tokens_for(session, settings, user)

    response = await anonymous_client.put(
        MY_PASSWORD, json=password_change(), headers=bearer(old.access_token)
    )

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    new = response.json()
    assert set(new) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert new["token_type"] == "bearer"
    me = await anonymous_client.get(ME, headers=bearer(new["access_token"]))
    assert me.status_code == 200
    assert me.json()["id"] == user.id
    refreshed = await anonymous_client.post(REFRESH, json={"refresh_token": new["refresh_token"]})
    assert refreshed.status_code == 200


async def test_change_password_ends_the_session_it_was_made_in(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await create_user(session)
    old = await tokens_for(session, settings, user)

    changed = await anonymous_client.put(
        MY_PASSWORD, json=password_change(), headers=bearer(old.access_token)
    )

    assert changed.status_code == 200, changed.text
    stale = await anonymous_client.get(ME, headers=bearer(old.access_token))
    assert_problem(stale, 401)
    assert stale.headers["www-authenticate"].startswith("Bearer")
    refresh = await anonymous_client.post(REFRESH, json={"refresh_token": old.refresh_token})
    assert_problem(refresh, 401)


async def test_change_password_ends_every_other_session_of_the_user(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await create_user(session)
    this_session = await tokens_for(session, settings, user)
    other_session = await tokens_for(session, settings, user)
    before = await anonymous_client.get(ME, headers=bearer(other_session.access_token))
    assert before.status_code == 200

    changed = await anonymous_client.put(
        MY_PASSWORD, json=password_change(), headers=bearer(this_session.access_token)
    )

    assert changed.status_code == 200
    stale = await anonymous_client.get(ME, headers=bearer(other_session.access_token))
    assert_problem(stale, 401)
    assert stale.headers["www-authenticate"].startswith("Bearer")
    refresh = await anonymous_client.post(
        REFRESH, json={"refresh_token": other_session.refresh_token}
    )
    assert_problem(refresh, 401)


async def test_after_a_password_change_only_the_new_password_logs_in(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await create_user(session, email="changer@example.com")
    pair = await tokens_for(session, settings, user)

    changed = await anonymous_client.put(
        MY_PASSWORD, json=password_change(), headers=bearer(pair.access_token)
    )

    assert changed.status_code == 200, changed.text
    with_new = await login(anonymous_client, "changer@example.com", NEW_PASSWORD)
    assert with_new.status_code == 200
    assert with_new.json()["access_token"]
    assert_problem(await login(anonymous_client, "changer@example.com", TEST_PASSWORD), 401)


async def test_change_password_with_wrong_current_password_returns_403_and_keeps_everything(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await create_user(session)
    pair = await tokens_for(session, settings, user)
    hash_before = user.hashed_password

    response = await anonymous_client.put(
        MY_PASSWORD,
        json=password_change(current="not my password at all"),
        headers=bearer(pair.access_token),
    )

    assert_problem(response, 403)
    row = await stored(session, User, user.id)
    assert row is not None
    assert row.hashed_password == hash_before
    assert (await anonymous_client.get(ME, headers=bearer(pair.access_token))).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        password_change(new="x" * 11),
        password_change(new="x" * 129),
        {"new_password": NEW_PASSWORD},
        {"current_password": TEST_PASSWORD},
        {**password_change(), "email": "other@example.com"},
    ],
    ids=["too-short", "too-long", "no-current", "no-new", "unknown-field"],
)
async def test_change_password_with_invalid_body_returns_422_and_keeps_everything(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, body: dict[str, str]
) -> None:
    user = await create_user(session)
    pair = await tokens_for(session, settings, user)
    hash_before = user.hashed_password

    response = await anonymous_client.put(MY_PASSWORD, json=body, headers=bearer(pair.access_token))

    assert_problem(response, 422, "validation-error")
    row = await stored(session, User, user.id)
    assert row is not None
    assert row.hashed_password == hash_before
    assert (await anonymous_client.get(ME, headers=bearer(pair.access_token))).status_code == 200


async def test_change_password_to_the_same_password_returns_422_and_keeps_everything(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await create_user(session)
    pair = await tokens_for(session, settings, user)
    hash_before = user.hashed_password

    response = await anonymous_client.put(
        MY_PASSWORD, json=password_change(new=TEST_PASSWORD), headers=bearer(pair.access_token)
    )

    problem = assert_problem(response, 422, "invalid-input")
    assert [error["field"] for error in problem["errors"]] == ["body.new_password"]
    for _ in range(settings.login_max_failures):  # the right password: never a failure
        await anonymous_client.put(
            MY_PASSWORD, json=password_change(new=TEST_PASSWORD), headers=bearer(pair.access_token)
        )
    row = await stored(session, User, user.id)
    assert row is not None
    assert row.locked_until is None
    assert row.hashed_password == hash_before
    assert (await anonymous_client.get(ME, headers=bearer(pair.access_token))).status_code == 200


async def test_change_password_accepts_exactly_12_characters(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await create_user(session)
    pair = await tokens_for(session, settings, user)

    response = await anonymous_client.put(
        MY_PASSWORD, json=password_change(new="x" * 12), headers=bearer(pair.access_token)
    )

    assert response.status_code == 200


async def test_change_password_without_a_token_returns_401(anonymous_client: AsyncClient) -> None:
    response = await anonymous_client.put(MY_PASSWORD, json=password_change())

    assert_problem(response, 401)


# --- POST /users ----------------------------------------------------------------------------


async def test_create_user_returns_201_with_location_etag_and_body(
    client: AsyncClient, anonymous_client: AsyncClient, session: AsyncSession
) -> None:
    payload = {"email": "grace@example.com", "password": NEW_PASSWORD, "full_name": "Grace Hopper"}

    response = await client.post(USERS, json=payload)

    assert response.status_code == 201, response.text
    body = user_body(response)
    assert response.headers["location"] == f"{USERS}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert (body["email"], body["full_name"]) == ("grace@example.com", "Grace Hopper")
    assert (body["is_active"], body["is_superuser"], body["version"]) == (True, False, 1)
    row = await stored(session, User, body["id"])
    assert row is not None
    assert row.hashed_password.startswith("$argon2id$")
    assert (await login(anonymous_client, "grace@example.com", NEW_PASSWORD)).status_code == 200


@pytest.mark.parametrize("duplicate", ["GRACE@EXAMPLE.COM", "Grace@example.com"])
async def test_create_user_with_duplicate_email_in_another_case_returns_409(
    client: AsyncClient, session: AsyncSession, duplicate: str
) -> None:
    await create_user(session, email="grace@example.com")

    response = await client.post(
        USERS, json={"email": duplicate, "password": NEW_PASSWORD, "full_name": "Grace"}
    )

    assert_problem(response, 409, "conflict")
    assert await user_count(session, "grace@example.com") == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"password": "x" * 11}, "body.password"),
        ({"email": "not-an-email"}, "body.email"),
        ({"email": "two@@example.com"}, "body.email"),
        ({"full_name": ""}, "body.full_name"),
        ({"is_superuser": True}, "body.is_superuser"),
        ({"is_active": False}, "body.is_active"),
        ({"id": 99}, "body.id"),
        ({"role_ids": [1]}, "body.role_ids"),
        ({"hashed_password": "$argon2id$forged"}, "body.hashed_password"),
    ],
)
async def test_create_user_with_invalid_or_unknown_field_returns_422_naming_it(
    client: AsyncClient, session: AsyncSession, overrides: dict[str, Any], field: str
) -> None:
    payload = {"email": "new@example.com", "password": NEW_PASSWORD, "full_name": "New"}

    response = await client.post(USERS, json=payload | overrides)

    problem = assert_problem(response, 422, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}
    assert await user_count(session, "new@example.com") == 0


# --- GET /users -----------------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["created_at", "-created_at"])
async def test_list_users_pages_through_everyone_with_a_keyset_cursor(
    client: AsyncClient, session: AsyncSession, superuser: User, sort: str
) -> None:
    others = [await create_user(session) for _ in range(4)]
    oldest_first = [superuser.id, *(user.id for user in others)]
    expected = oldest_first if sort == "created_at" else oldest_first[::-1]

    pages = await pages_of(client, limit=2, sort=sort)

    assert [[item["id"] for item in page] for page in pages] == [
        expected[:2],
        expected[2:4],
        expected[4:],
    ]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("lovelace", ["ada.l@example.com"]),
        ("GRACE.H", ["grace.h@example.com"]),
        ("Hopper", ["grace.h@example.com"]),
        ("%", []),
        ("_", []),
    ],
)
async def test_list_users_filters_on_email_or_name_case_insensitively(
    client: AsyncClient, session: AsyncSession, q: str, expected: list[str]
) -> None:
    for email, name in [
        ("ada.l@example.com", "Ada Lovelace"),
        ("grace.h@example.com", "Grace Hopper"),
    ]:
        user = await create_user(session, email=email)
        user.full_name = name
    await session.commit()

    response = await client.get(USERS, params={"q": q})

    assert [item["email"] for item in user_page(response)] == expected


async def test_list_users_filters_on_is_active(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    active = await create_user(session)
    inactive = await create_user(session, is_active=False)

    inactive_page = await client.get(USERS, params={"is_active": "false"})
    active_page = await client.get(USERS, params={"is_active": "true"})

    assert [item["id"] for item in user_page(inactive_page)] == [inactive.id]
    assert [item["id"] for item in user_page(active_page)] == [superuser.id, active.id]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"q": ""},
        {"q": "x" * 101},
        {"sort": "email"},
        {"is_active": "maybe"},
    ],
)
async def test_list_users_with_invalid_query_returns_422(
    client: AsyncClient, params: dict[str, Any]
) -> None:
    response = await client.get(USERS, params=params)

    assert_problem(response, 422)


async def test_list_users_with_a_forged_cursor_returns_400(client: AsyncClient) -> None:
    response = await client.get(USERS, params={"cursor": "Zm9yZ2VkLWN1cnNvcg"})

    assert_problem(response, 400, "invalid-cursor")


# --- GET /users/{id} ------------------------------------------------------------------------


# --- PATCH /users/{id} ----------------------------------------------------------------------


async def test_patch_user_changes_only_the_fields_sent_and_bumps_version(
    client: AsyncClient, session: AsyncSession
) -> None:
    user = await create_user(session, email="before@example.com")

    response = await client.patch(
        f"{USERS}/{user.id}", json={"full_name": "Renamed", "email": "after@example.com"}
    )

    assert response.status_code == 200
    body = user_body(response)
    assert (body["full_name"], body["email"], body["is_active"]) == (
        "Renamed",
        "after@example.com",
        True,
    )
    assert body["version"] == 2
    assert response.headers["etag"] == '"2"'
    row = await stored(session, User, user.id)
    assert row is not None
    assert (row.full_name, row.email) == ("Renamed", "after@example.com")


async def test_patch_user_can_deactivate_and_reactivate(
    client: AsyncClient, session: AsyncSession
) -> None:
    user = await create_user(session)

    deactivated = await client.patch(f"{USERS}/{user.id}", json={"is_active": False})
    reactivated = await client.patch(f"{USERS}/{user.id}", json={"is_active": True})

    assert deactivated.status_code == 200
    assert user_body(deactivated)["is_active"] is False
    assert user_body(reactivated)["is_active"] is True


async def test_etag_of_a_patch_response_is_the_current_one(
    client: AsyncClient, session: AsyncSession
) -> None:
    user = await create_user(session)
    deactivated = await client.patch(f"{USERS}/{user.id}", json={"is_active": False})

    response = await client.patch(
        f"{USERS}/{user.id}",
        json={"full_name": "Next"},
        headers={"If-Match": deactivated.headers["etag"]},
    )

    assert response.status_code == 200, response.text
    assert user_body(deactivated)["version"] == int(deactivated.headers["etag"].strip('"'))


async def test_patch_user_with_stale_if_match_keeps_their_email_and_active_status(
    client: AsyncClient, session: AsyncSession
) -> None:
    # The If-Match contract itself: tests/core/test_versioned_resources_api.py.
    user = await create_user(session, email="keep@example.com")

    response = await client.patch(
        f"{USERS}/{user.id}",
        json={"full_name": "Lost update", "email": "lost@example.com", "is_active": False},
        headers={"If-Match": '"0"'},
    )

    assert_problem(response, 412, "precondition-failed")
    row = await stored(session, User, user.id)
    assert row is not None
    assert (row.full_name, row.email, row.is_active, row.version) == (
        "Test User",
        "keep@example.com",
        True,
        1,
    )


async def test_patch_user_to_a_taken_email_in_another_case_returns_409(
    client: AsyncClient, session: AsyncSession
) -> None:
    await create_user(session, email="taken@example.com")
    other = await create_user(session, email="other@example.com")

    response = await client.patch(f"{USERS}/{other.id}", json={"email": "TAKEN@example.com"})

    assert_problem(response, 409, "conflict")
    row = await stored(session, User, other.id)
    assert row is not None
    assert row.email == "other@example.com"


@pytest.mark.parametrize(
    "body",
    [
        {"email": None},
        {"full_name": None},
        {"is_active": None},
        {"is_superuser": None},
        {"email": "nope"},
        {"is_active": "false"},
        {"password": NEW_PASSWORD},
        {"hashed_password": "x"},
        {"version": 9},
        {"id": 3},
    ],
)
async def test_patch_user_with_invalid_body_returns_422_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, body: dict[str, Any]
) -> None:
    user = await create_user(session)

    response = await client.patch(f"{USERS}/{user.id}", json=body)

    assert_problem(response, 422, "validation-error")
    row = await stored(session, User, user.id)
    assert row is not None
    assert row.version == 1


async def test_deactivating_a_user_ends_their_sessions(
    client: AsyncClient, anonymous_client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await create_user(session, email="leaver@example.com")
    pair = await tokens_for(session, settings, user)
    assert (await anonymous_client.get(ME, headers=bearer(pair.access_token))).status_code == 200

    response = await client.patch(f"{USERS}/{user.id}", json={"is_active": False})

    assert response.status_code == 200
    access = await anonymous_client.get(ME, headers=bearer(pair.access_token))
    assert_problem(access, 401)
    assert access.headers["www-authenticate"].startswith("Bearer")
    refresh = await anonymous_client.post(REFRESH, json={"refresh_token": pair.refresh_token})
    assert_problem(refresh, 401)
    assert_problem(await login(anonymous_client, "leaver@example.com", TEST_PASSWORD), 401)


# --- DELETE /users/{id} ---------------------------------------------------------------------


async def test_delete_user_holding_a_role_returns_204(
    client: AsyncClient, session: AsyncSession
) -> None:
    user = await create_user(session, roles=["viewer"])

    response = await client.delete(f"{USERS}/{user.id}")

    assert response.status_code == 204
    assert await stored(session, User, user.id) is None
    assert await stored_role_ids(session, user.id) == set()


async def test_deleting_a_user_ends_their_sessions(
    client: AsyncClient, anonymous_client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await create_user(session)
    pair = await tokens_for(session, settings, user)

    deleted = await client.delete(f"{USERS}/{user.id}")

    assert deleted.status_code == 204
    assert_problem(await anonymous_client.get(ME, headers=bearer(pair.access_token)), 401)
    refresh = await anonymous_client.post(REFRESH, json={"refresh_token": pair.refresh_token})
    assert_problem(refresh, 401)


async def test_delete_yourself_returns_403_and_keeps_you(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    response = await client.delete(f"{USERS}/{superuser.id}")

    assert_problem(response, 403, "forbidden")
    assert await stored(session, User, superuser.id) is not None
    assert (await client.get(ME)).status_code == 200


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
