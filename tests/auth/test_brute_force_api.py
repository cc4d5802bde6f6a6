"""Brute force from many addresses at once: the lockout cannot be raced, argon2 cannot stall
the server, and the rate limits count clients the way an attacker cannot dodge.

Every client here sits behind a trusted proxy (the test transport's peer, 127.0.0.1), so each
request can come from an address of its own through `X-Forwarded-For`, as from a botnet."""

import asyncio
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network
from typing import Any

import pytest
import structlog
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from backoffice.auth.models import User
from backoffice.auth.router import install_rate_limiters
from backoffice.core.config import Settings
from backoffice.core.main import create_app
from tests.support.http import assert_problem, bearer
from tests.support.users import LOGIN, ME, TEST_PASSWORD, tokens_for

PASSWORD = "the right long password"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"trusted_proxies": [IPv4Network("127.0.0.1/32")]})


async def login_from(
    client: AsyncClient, address: str, email: str, password: str = TEST_PASSWORD
) -> Response:
    return await client.post(
        LOGIN,
        data={"username": email, "password": password},
        headers={"X-Forwarded-For": address},
    )


def checked_passwords(logs: Sequence[Mapping[str, Any]]) -> int:
    """Passwords argon2 compared with the account's hash, as the log tells them."""
    return sum(
        entry["event"] == "auth.login_succeeded"
        or (entry["event"] == "auth.login_failed" and entry.get("reason") == "wrong password")
        for entry in logs
    )


@pytest.mark.committed
async def test_a_burst_of_wrong_passwords_cannot_carry_the_right_one_past_the_lockout(
    committed_client: AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    """19 wrong passwords from 19 addresses, and the right one from a 20th while they are in
    flight: each guess is booked against the lockout before it is checked, so no more than
    LOGIN_MAX_FAILURES are checked, and the right one comes too late."""
    created = await committed_client.post(
        "/api/v1/users", json={"email": "burst@example.com", "password": PASSWORD, "full_name": "B"}
    )
    assert created.status_code == 201
    # Open the pool's connections first, so the burst measures the lockout, not connecting.
    await asyncio.gather(*(committed_client.get("/health/ready") for _ in range(20)))

    async def right_one_while_the_burst_is_in_flight() -> Response:
        # Sent once the database shows the account locked (the burst booked its guesses), or
        # after a second at most: either way while the burst's checks are still running.
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 1.0
        while loop.time() < give_up:
            async with engine.connect() as connection:
                locked = await connection.scalar(
                    text("SELECT locked_until IS NOT NULL FROM users WHERE email = :email"),
                    {"email": "burst@example.com"},
                )
            if locked:
                break
            await asyncio.sleep(0.01)
        return await login_from(committed_client, "203.0.113.99", "burst@example.com", PASSWORD)

    with structlog.testing.capture_logs() as logs:
        *wrong, right = await asyncio.gather(
            *(
                login_from(committed_client, f"203.0.113.{n}", "burst@example.com", f"guess {n}")
                for n in range(1, 20)
            ),
            right_one_while_the_burst_is_in_flight(),
        )

    assert [response.status_code for response in wrong] == [401] * 19
    assert_problem(right, 401, "invalid-credentials")
    assert checked_passwords(logs) <= settings.login_max_failures
    user = (await committed_client.get(f"/api/v1/users/{created.json()['id']}")).json()
    assert user["locked_until"] is not None
    assert user["version"] == 1  # bookkeeping, not an edit: the ETag did not move


@pytest.mark.committed
async def test_a_login_flood_leaves_the_liveness_probe_fast(
    committed_client: AsyncClient,
) -> None:
    """argon2 runs in worker threads (a few at a time), never on the event loop: while a
    dozen logins are being checked, other requests are answered at once."""
    # Connections opened beforehand: the logins reach argon2 at once instead of connecting.
    await asyncio.gather(*(committed_client.get("/health/ready") for _ in range(12)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    flood = [
        asyncio.create_task(login_from(committed_client, f"198.51.100.{n}", f"x{n}@example.com"))
        for n in range(12)
    ]
    timings = []
    for probe_number in range(5):
        # Timed from when the probe was due: a blocked event loop delays its start as much
        # as its answer, and both count.
        due = started + 0.3 + 0.1 * probe_number
        await asyncio.sleep(max(0.0, due - loop.time()))
        probe = await committed_client.get("/health/live")
        timings.append(loop.time() - due)
        assert probe.status_code == 200
    still_hashing = sum(not login.done() for login in flood)
    answers = await asyncio.gather(*flood)

    assert max(timings) < 0.5, timings
    assert still_hashing > 0  # the probes did run during the flood
    assert [answer.status_code for answer in answers] == [401] * 12


async def test_an_ipv6_client_is_limited_by_its_64_network(
    anonymous_client: AsyncClient, app: FastAPI, settings: Settings
) -> None:
    """One subscriber gets a whole /64: 2**64 addresses must not mean 2**64 budgets."""
    install_rate_limiters(app, settings.model_copy(update={"login_rate_limit": "3/minute"}))
    same_network = [f"2001:db8:1:2:{n:x}::{n:x}" for n in range(1, 5)]

    responses = [
        await login_from(anonymous_client, address, "nobody@example.com")
        for address in same_network
    ]
    next_network = await login_from(anonymous_client, "2001:db8:1:3::1", "nobody@example.com")

    assert [response.status_code for response in responses] == [401, 401, 401, 429]
    assert next_network.status_code == 401


async def test_password_changes_are_rate_limited_per_user_from_any_address(
    anonymous_client: AsyncClient,
    app: FastAPI,
    session: AsyncSession,
    settings: Settings,
    member: User,
) -> None:
    install_rate_limiters(
        app, settings.model_copy(update={"password_change_rate_limit": "2/minute"})
    )
    headers = bearer((await tokens_for(session, settings, member)).access_token)
    change = {"current_password": "a wrong guess", "new_password": "a new long passphrase"}

    responses = [
        await anonymous_client.put(
            f"{ME}/password", json=change, headers=headers | {"X-Forwarded-For": f"192.0.2.{n}"}
        )
        for n in range(1, 4)
    ]

    assert [response.status_code for response in responses] == [403, 403, 429]
    assert responses[0].headers["ratelimit-limit"] == "2"
    assert responses[0].headers["ratelimit-remaining"] == "1"
    refused = assert_problem(responses[2], 429, "rate-limited")
    assert "password changes" in refused["detail"]
    assert int(responses[2].headers["retry-after"]) > 0
    assert responses[2].headers["ratelimit-remaining"] == "0"


async def test_password_changes_are_rate_limited_per_address_across_users(
    anonymous_client: AsyncClient,
    app: FastAPI,
    session: AsyncSession,
    settings: Settings,
) -> None:
    from tests.support.users import create_user

    install_rate_limiters(
        app, settings.model_copy(update={"password_change_rate_limit": "2/minute"})
    )
    users = [await create_user(session) for _ in range(3)]
    change = {"current_password": "a wrong guess", "new_password": "a new long passphrase"}

    responses = []
    for user in users:
        token = (await tokens_for(session, settings, user)).access_token
        responses.append(
            await anonymous_client.put(
                f"{ME}/password",
                json=change,
                headers=bearer(token) | {"X-Forwarded-For": "192.0.2.7"},
            )
        )

    assert [response.status_code for response in responses] == [403, 403, 429]


async def test_every_forwarded_for_line_counts_not_only_the_clients_own(
    anonymous_client: AsyncClient, app: FastAPI, settings: Settings
) -> None:
    """A proxy may append its own `X-Forwarded-For` line after the one the client sent: the
    lines are one list, so the client's forged first line changes nothing."""
    install_rate_limiters(app, settings.model_copy(update={"login_rate_limit": "3/minute"}))

    answers = [
        await anonymous_client.post(
            LOGIN,
            data={"username": "nobody@example.com", "password": TEST_PASSWORD},
            headers=[("X-Forwarded-For", f"198.51.100.{n}"), ("X-Forwarded-For", "203.0.113.7")],
        )
        for n in range(4)
    ]

    assert [answer.status_code for answer in answers] == [401, 401, 401, 429]


def test_the_limiters_are_made_with_the_app_from_its_settings(settings: Settings) -> None:
    """At start-up, not on the first login: every request of the app counts on the same ones."""
    app = create_app(
        settings.model_copy(
            update={"login_rate_limit": "3/minute", "password_change_rate_limit": "2/minute"}
        )
    )

    assert (app.state.login_limiter.namespace, app.state.login_limiter.item.amount) == ("login", 3)
    assert app.state.password_change_limiter.item.amount == 2
