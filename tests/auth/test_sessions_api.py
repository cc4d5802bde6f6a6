"""Login, lockout, rate limiting, refresh-token rotation and logout, through the HTTP API."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from httpx import AsyncClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.auth.models import RefreshToken, User
from backoffice.core.config import Settings
from tests.support.http import assert_problem, bearer
from tests.support.users import LOGIN, LOGOUT, ME, REFRESH, TEST_PASSWORD, login


async def reload(session: AsyncSession, user: User) -> User:
    result = await session.execute(
        select(User).where(User.id == user.id).execution_options(populate_existing=True)  # type: ignore[arg-type]
    )
    return result.scalars().one()


# --- login ----------------------------------------------------------------------------------


async def test_login_returns_a_bearer_token_pair_not_to_be_cached(
    anonymous_client: AsyncClient, member: User
) -> None:
    response = await login(anonymous_client, member.email)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    assert response.headers["cache-control"] == "no-store"
    me = await anonymous_client.get(ME, headers=bearer(body["access_token"]))
    assert me.json()["email"] == member.email


async def test_login_email_is_case_insensitive(anonymous_client: AsyncClient, member: User) -> None:
    response = await login(anonymous_client, member.email.upper())

    assert response.status_code == 200


async def _failure_bodies(
    anonymous_client: AsyncClient, session: AsyncSession
) -> list[dict[str, object]]:
    from tests.support.users import create_user

    await create_user(session, email="disabled@example.com", is_active=False)
    await create_user(session, email="known@example.com")
    attempts = [
        await login(anonymous_client, "nobody@example.com"),
        await login(anonymous_client, "known@example.com", "wrong password!"),
        await login(anonymous_client, "disabled@example.com"),
    ]
    for response in attempts:
        assert_problem(response, 401, "invalid-credentials")
        assert response.headers["www-authenticate"] == "Bearer"
    return [{k: v for k, v in r.json().items() if k != "request_id"} for r in attempts]


async def test_unknown_user_wrong_password_and_disabled_user_get_the_same_401(
    anonymous_client: AsyncClient, session: AsyncSession
) -> None:
    bodies = await _failure_bodies(anonymous_client, session)

    assert bodies[0] == bodies[1] == bodies[2]


@pytest.mark.parametrize(
    "form",
    [{}, {"username": "a@example.com"}, {"password": "x"}],
)
async def test_login_without_credentials_returns_422(
    anonymous_client: AsyncClient, form: dict[str, str]
) -> None:
    response = await anonymous_client.post(LOGIN, data=form)

    assert_problem(response, 422)


async def test_five_failures_in_a_row_lock_the_account(
    anonymous_client: AsyncClient, session: AsyncSession, member: User, settings: Settings
) -> None:
    for _ in range(settings.login_max_failures):
        assert (await login(anonymous_client, member.email, "not the password")).status_code == 401

    locked = await login(anonymous_client, member.email)  # the right password, too late

    assert_problem(locked, 401, "invalid-credentials")
    stored = await reload(session, member)
    assert stored.locked_until is not None
    remaining = stored.locked_until - datetime.now(UTC)
    assert timedelta(minutes=14) < remaining <= timedelta(minutes=15)


async def test_a_locked_account_opens_again_when_the_lock_expires(
    anonymous_client: AsyncClient, session: AsyncSession, member: User
) -> None:
    await session.execute(
        update(User)
        .where(User.id == member.id)  # type: ignore[arg-type]
        .values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
    )
    await session.commit()

    response = await login(anonymous_client, member.email)

    assert response.status_code == 200


async def test_a_success_resets_the_failure_count(
    anonymous_client: AsyncClient, session: AsyncSession, member: User, settings: Settings
) -> None:
    for _ in range(settings.login_max_failures - 1):
        await login(anonymous_client, member.email, "not the password")
    assert (await login(anonymous_client, member.email)).status_code == 200

    for _ in range(settings.login_max_failures - 1):
        await login(anonymous_client, member.email, "not the password")

    assert (await login(anonymous_client, member.email)).status_code == 200
    assert (await reload(session, member)).failed_login_count == 0


async def test_login_is_rate_limited_per_client_with_headers(
    anonymous_client: AsyncClient, member: User, rate_limited_settings: Settings
) -> None:
    responses = [await login(anonymous_client, member.email) for _ in range(4)]

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in responses[:3]] == ["2", "1", "0"]
    assert responses[0].headers["ratelimit-limit"] == "3"
    refused = responses[3]
    assert_problem(refused, 429, "rate-limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-remaining"] == "0"


# --- refresh --------------------------------------------------------------------------------


async def _login_pair(client: AsyncClient, user: User) -> dict[str, str]:
    response = await login(client, user.email)
    assert response.status_code == 200
    pair: dict[str, str] = response.json()
    return pair


async def test_refresh_rotates_the_pair(anonymous_client: AsyncClient, member: User) -> None:
    first = await _login_pair(anonymous_client, member)

    response = await anonymous_client.post(REFRESH, json={"refresh_token": first["refresh_token"]})

    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (
        await anonymous_client.get(ME, headers=bearer(second["access_token"]))
    ).status_code == 200


async def test_a_spent_refresh_token_fails(anonymous_client: AsyncClient, member: User) -> None:
    first = await _login_pair(anonymous_client, member)
    await anonymous_client.post(REFRESH, json={"refresh_token": first["refresh_token"]})

    replay = await anonymous_client.post(REFRESH, json={"refresh_token": first["refresh_token"]})

    assert_problem(replay, 401, "invalid-refresh-token")


async def test_replaying_a_spent_refresh_token_kills_its_whole_family(
    anonymous_client: AsyncClient, session: AsyncSession, member: User
) -> None:
    first = await _login_pair(anonymous_client, member)
    second = (
        await anonymous_client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    ).json()

    await anonymous_client.post(REFRESH, json={"refresh_token": first["refresh_token"]})  # replay

    after = await anonymous_client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
    assert_problem(after, 401)
    # The access token of the stolen session dies with it.
    assert_problem(await anonymous_client.get(ME, headers=bearer(second["access_token"])), 401)
    tokens = select(RefreshToken).where(col(RefreshToken.user_id) == member.id)
    rows = (await session.scalars(tokens)).all()
    assert rows
    assert all(row.revoked_at is not None for row in rows)


async def test_two_logins_are_two_families_and_killing_one_spares_the_other(
    anonymous_client: AsyncClient, member: User
) -> None:
    laptop = await _login_pair(anonymous_client, member)
    phone = await _login_pair(anonymous_client, member)
    await anonymous_client.post(REFRESH, json={"refresh_token": laptop["refresh_token"]})
    await anonymous_client.post(REFRESH, json={"refresh_token": laptop["refresh_token"]})  # replay

    response = await anonymous_client.post(REFRESH, json={"refresh_token": phone["refresh_token"]})

    assert response.status_code == 200
    assert (
        await anonymous_client.get(ME, headers=bearer(phone["access_token"]))
    ).status_code == 200


@pytest.mark.parametrize(
    "body", [{}, {"refresh_token": ""}, {"refresh_token": 5}, {"refresh_token": "x" * 2000}]
)
async def test_refresh_with_malformed_body_returns_422(
    anonymous_client: AsyncClient, body: dict[str, object]
) -> None:
    assert_problem(await anonymous_client.post(REFRESH, json=body), 422)


async def test_refresh_with_an_unknown_token_returns_401(anonymous_client: AsyncClient) -> None:
    response = await anonymous_client.post(REFRESH, json={"refresh_token": "not-a-real-token"})

    assert_problem(response, 401, "invalid-refresh-token")


async def test_an_expired_refresh_token_fails(
    anonymous_client: AsyncClient, session: AsyncSession, member: User
) -> None:
    pair = await _login_pair(anonymous_client, member)
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == member.id)  # type: ignore[arg-type]
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    await session.commit()

    response = await anonymous_client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})

    assert_problem(response, 401)


async def test_refresh_token_is_refused_in_a_query_string(
    anonymous_client: AsyncClient, member: User
) -> None:
    pair = await _login_pair(anonymous_client, member)

    response = await anonymous_client.post(REFRESH, params={"refresh_token": pair["refresh_token"]})

    assert_problem(response, 422)


# --- logout ---------------------------------------------------------------------------------


async def test_logout_revokes_the_access_token_and_the_session(
    anonymous_client: AsyncClient, member: User
) -> None:
    pair = await _login_pair(anonymous_client, member)
    headers = bearer(pair["access_token"])

    response = await anonymous_client.delete(LOGOUT, headers=headers)

    assert response.status_code == 204
    assert_problem(await anonymous_client.get(ME, headers=headers), 401, "invalid-token")
    refreshed = await anonymous_client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
    assert_problem(refreshed, 401)


async def test_logout_leaves_other_sessions_alive(
    anonymous_client: AsyncClient, member: User
) -> None:
    laptop = await _login_pair(anonymous_client, member)
    phone = await _login_pair(anonymous_client, member)

    await anonymous_client.delete(LOGOUT, headers=bearer(laptop["access_token"]))

    assert (
        await anonymous_client.get(ME, headers=bearer(phone["access_token"]))
    ).status_code == 200


async def test_logout_without_a_token_returns_401(anonymous_client: AsyncClient) -> None:
    response = await anonymous_client.delete(LOGOUT)

    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.committed
async def test_concurrent_failed_logins_all_count_and_all_get_the_same_401(
    committed_client: AsyncClient, settings: Settings
) -> None:
    """Failures are counted by one atomic UPDATE: parallel guesses can neither dodge the
    lockout nor reveal, by a different answer, that the account exists."""
    created = await committed_client.post(
        "/api/v1/users",
        json={"email": "racer@example.com", "password": "a long enough password", "full_name": "R"},
    )
    assert created.status_code == 201
    attempts = settings.login_max_failures - 1

    responses = await asyncio.gather(
        *(login(committed_client, "racer@example.com", f"wrong guess {n}") for n in range(attempts))
    )

    assert {response.status_code for response in responses} == {401}
    user = (await committed_client.get(f"/api/v1/users/{created.json()['id']}")).json()
    assert user["version"] == 1  # bookkeeping, not an edit: the ETag did not move
    await login(committed_client, "racer@example.com", "one more wrong guess")
    locked = await login(committed_client, "racer@example.com", "a long enough password")
    assert_problem(locked, 401, "invalid-credentials")


async def test_failed_logins_answer_with_rate_limit_headers_too(
    anonymous_client: AsyncClient, member: User
) -> None:
    response = await login(anonymous_client, member.email, "wrong password!!")

    assert_problem(response, 401)
    assert response.headers["ratelimit-limit"] == "10"
    assert response.headers["ratelimit-remaining"] == "9"


async def test_request_without_token_gets_a_plain_bearer_challenge(
    anonymous_client: AsyncClient,
) -> None:
    response = await anonymous_client.get(ME)

    assert_problem(response, 401, "missing-token")
    assert response.headers["www-authenticate"] == "Bearer"  # RFC 6750 3.1: no error code


async def test_wrong_current_passwords_count_towards_the_lockout(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, member: User
) -> None:
    from tests.support.users import tokens_for

    headers = bearer((await tokens_for(session, settings, member)).access_token)
    change = {"new_password": "a new long passphrase"}
    for n in range(settings.login_max_failures):
        wrong = await anonymous_client.put(
            f"{ME}/password", json=change | {"current_password": f"guess {n}"}, headers=headers
        )
        assert_problem(wrong, 403, "wrong-current-password")

    right = await anonymous_client.put(
        f"{ME}/password", json=change | {"current_password": TEST_PASSWORD}, headers=headers
    )

    assert_problem(right, 403)
    assert "locked" in right.json()["detail"]
    assert (await reload(session, member)).locked_until is not None


async def test_swagger_authorize_button_can_log_in(
    anonymous_client: AsyncClient, member: User
) -> None:
    """Swagger UI's password flow posts this exact form to the scheme's tokenUrl."""
    document = (await anonymous_client.get("/openapi.json")).json()
    flow = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]
    form = {"grant_type": "password", "username": member.email, "password": TEST_PASSWORD}

    response = await anonymous_client.post(flow["tokenUrl"], data=form | {"scope": ""})

    assert response.status_code == 200
    token = response.json()["access_token"]
    assert (await anonymous_client.get(ME, headers=bearer(token))).status_code == 200
    secured = document["paths"]["/api/v1/products"]["get"]["security"]
    assert secured == [{"OAuth2PasswordBearer": []}, {"ApiKey": []}]  # either one
