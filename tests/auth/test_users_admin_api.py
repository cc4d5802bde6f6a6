"""User administration under `/users` (the `users` module): creating, listing, reading, changing
and deleting accounts, and what deactivating or deleting one does to its sessions. ETag,
If-Match and id range: tests/core/test_versioned_resources_api.py."""

from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from backoffice.core.config import Settings
from tests.support.database import stored
from tests.support.factories import USERS
from tests.support.http import assert_problem, bearer
from tests.support.users import (
    ME,
    NEW_PASSWORD,
    REFRESH,
    TEST_PASSWORD,
    USER_FIELDS,
    create_user,
    login,
    stored_role_ids,
    tokens_for,
    user_body,
    user_count,
)


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
