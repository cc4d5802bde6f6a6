"""A database that stops answering without closing anything (a frozen host, a network that
drops packets) is the outage that makes clients hang: connections stay open and nothing comes
back. With the server's processes stopped (SIGSTOP) under an app with a warm pool: requests
already holding a connection are answered 503 once the statement bound passes, new ones once
the connect bound passes, readiness within its own bound; once the server resumes, everything
succeeds again without a restart.
"""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from httpx import AsyncClient, Response

from backoffice.audit.changes import AuditedSession
from backoffice.core.config import Environment, Settings
from backoffice.core.database import Database
from backoffice.core.main import create_app
from tests.own_postgres import OwnPostgres, own_postgres
from tests.support.http import api_client as _client
from tests.support.http import assert_problem
from tests.support.users import create_user, tokens_for

STATEMENT_TIMEOUT_MS = 1_000  # the client-side statement bound is one second more
CONNECT_TIMEOUT_MS = 500
HEALTH_TIMEOUT_MS = 500
SLACK_S = 1.0
CONCURRENT = 6  # more than the warm connections: some requests must open new ones
PRODUCTS = "/api/v1/products"


def _settings() -> Settings:
    return Settings(
        _env_file=None,
        environment=Environment.TEST,
        db_statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        db_connect_timeout_ms=CONNECT_TIMEOUT_MS,
        health_timeout_ms=HEALTH_TIMEOUT_MS,
    )


@pytest.fixture
async def postgres() -> AsyncIterator[OwnPostgres]:
    with own_postgres() as server:
        yield server


@pytest.fixture
async def frozen_app_client(postgres: OwnPostgres) -> AsyncIterator[AsyncClient]:
    """A signed-in client of an app over `postgres`, its pool warm."""
    settings = _settings()
    owner_url, app_url = await postgres.migrated_database()
    owner = Database.connect(owner_url, settings, session_class=AuditedSession)
    async with owner.sessions() as session:
        user = await create_user(session, email="frozen@example.com", is_superuser=True)
        pair = await tokens_for(session, settings, user)
    await owner.dispose()
    app = create_app(settings)
    app.state.database = Database.connect(app_url, settings, session_class=AuditedSession)
    try:
        async with _client(app, pair.access_token) as client:
            warm = await asyncio.gather(*(client.get(PRODUCTS) for _ in range(CONCURRENT // 2)))
            assert {response.status_code for response in warm} == {200}
            assert (await client.get("/health/ready")).status_code == 200
            yield client
    finally:
        await app.state.database.dispose()


async def _timed(client: AsyncClient, path: str) -> tuple[Response, float]:
    started = time.monotonic()
    response = await client.get(path)
    return response, time.monotonic() - started


async def test_a_frozen_database_is_answered_within_the_bounds_and_recovered_alone(
    postgres: OwnPostgres, frozen_app_client: AsyncClient
) -> None:
    client = frozen_app_client
    postgres.freeze()
    try:
        frozen = await asyncio.gather(
            *(_timed(client, PRODUCTS) for _ in range(CONCURRENT)),
            _timed(client, "/health/ready"),
        )
        live = await client.get("/health/live")
    finally:
        postgres.thaw()
    *api, (ready, ready_took) = frozen
    after = await asyncio.gather(*(client.get(PRODUCTS) for _ in range(CONCURRENT)))
    ready_after = await client.get("/health/ready")

    for response, took in api:
        assert_problem(response, 503, "database-unavailable")
        assert response.headers["retry-after"]
        assert took <= STATEMENT_TIMEOUT_MS / 1000 + 1 + SLACK_S, f"{took:.2f} s"
    assert_problem(ready, 503, "database-unavailable")
    assert ready_took < 1.0
    assert live.status_code == 200
    assert [response.status_code for response in after] == [200] * CONCURRENT
    assert ready_after.status_code == 200
