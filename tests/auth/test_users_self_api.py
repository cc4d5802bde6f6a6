"""Your own account, under `/users/me`: reading and renaming it, and changing your password
(which ends your other sessions and hands you a new pair)."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from backoffice.core.config import Settings
from tests.support.database import stored
from tests.support.http import assert_problem, bearer
from tests.support.users import (
    ME,
    NEW_PASSWORD,
    REFRESH,
    TEST_PASSWORD,
    SignIn,
    create_user,
    login,
    tokens_for,
    user_body,
)

MY_PASSWORD = f"{ME}/password"


def password_change(current: str = TEST_PASSWORD, new: str = NEW_PASSWORD) -> dict[str, str]:
    return {"current_password": current, "new_password": new}


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
