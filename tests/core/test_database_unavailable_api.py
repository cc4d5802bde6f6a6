"""With the database unavailable, every operation answers a 503 problem with Retry-After, and
fast: never a 500, never a hang.

The operations come from the OpenAPI document, so a new route inherits the proof. Two kinds of
outage: a database that refuses connections (stopped: the port is closed) and one that never
answers (a frozen host: the connection is accepted but nothing comes back), each within the
connect bound of the settings. The probes: /health/ready answers 503 within its own bound and
/health/live stays 200. A pool with no free connection answers 503 within the checkout bound.
"""

import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import pytest
from httpx import AsyncClient, Response

from backoffice.audit.changes import AuditedSession
from backoffice.auth.tokens import create_access_token
from backoffice.core.config import Environment, Settings
from backoffice.core.database import Database
from backoffice.core.errors import RETRY_AFTER_S
from backoffice.core.main import create_app
from tests.live_server import free_port
from tests.support.http import api_client, assert_problem

# The app's bounds in these tests, and what a slow, loaded CI machine may add to them: still
# short of the default bounds (2 s), let alone the driver's own connect time-out (60 s).
BOUND_MS = 100
SLACK_S = 1.5
UNAVAILABLE = "database-unavailable"
# Valid bodies for the two routes open without a token, which validate their body before
# anything reaches the database. Every other route authenticates first, with the database.
FORM_BODIES = {
    "/api/v1/auth/sessions": {"username": "someone@example.com", "password": "not-the-password"}
}
JSON_BODIES = {"/api/v1/auth/tokens": {"refresh_token": "a-refresh-token-nobody-issued"}}


def _settings() -> Settings:
    return Settings(
        _env_file=None,
        environment=Environment.TEST,
        db_connect_timeout_ms=BOUND_MS,
        db_pool_timeout_ms=BOUND_MS,
        health_timeout_ms=BOUND_MS,
    )


@cache
def _operations() -> list[tuple[str, str, bool]]:
    """(method, path with every parameter 1, whether it takes a JSON body) of every operation."""
    document: dict[str, Any] = create_app(_settings()).openapi()
    operations = []
    for template, item in document["paths"].items():
        path = template
        for name in [p["name"] for op in item.values() for p in op.get("parameters", [])]:
            path = path.replace(f"{{{name}}}", "1")
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            operations.append((method.upper(), path, "application/json" in content))
    return operations


def _api_operations() -> list[tuple[str, str, bool]]:
    return [op for op in _operations() if op[1].startswith("/api/")]


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word, like a frozen database host."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        yield listener.getsockname()[1]


@asynccontextmanager
async def _client_of(port: int) -> AsyncIterator[AsyncClient]:
    """A client signed in (a well-formed, signed token) to an app whose database is at
    `port` of this host."""
    settings = _settings()
    app = create_app(settings)
    app.state.database = Database.connect(f"postgresql://nobody@127.0.0.1:{port}/none", settings)
    token = create_access_token(settings, user_id=1, token_version=0, session_id=uuid.uuid4())
    try:
        async with api_client(app, token.token) as client:
            yield client
    finally:
        await app.state.database.dispose()


async def _request(client: AsyncClient, method: str, path: str, json_body: bool) -> Response:
    if form := FORM_BODIES.get(path):
        return await client.request(method, path, data=form)
    return await client.request(method, path, json=JSON_BODIES.get(path, {}) if json_body else None)


def _assert_unavailable(response: Response, took: float) -> None:
    assert_problem(response, 503, UNAVAILABLE)
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)
    assert took <= BOUND_MS / 1000 * 2 + SLACK_S, f"{took:.2f} s"


@pytest.mark.parametrize("kind", ["refused", "silent"])
async def test_every_operation_answers_503_fast_while_the_database_is_unavailable(
    kind: str, silent_port: int
) -> None:
    port = silent_port if kind == "silent" else free_port()
    async with _client_of(port) as client:
        for method, path, json_body in _api_operations():
            started = time.monotonic()
            response = await _request(client, method, path, json_body)
            took = time.monotonic() - started
            assert response.status_code == 503, (method, path, response.text)
            _assert_unavailable(response, took)


@pytest.mark.parametrize("kind", ["refused", "silent"])
async def test_readiness_says_503_within_its_bound_and_liveness_stays_200(
    kind: str, silent_port: int
) -> None:
    port = silent_port if kind == "silent" else free_port()
    async with _client_of(port) as client:
        started = time.monotonic()
        ready = await client.get("/health/ready")
        took = time.monotonic() - started
        live = await client.get("/health/live")

    # (Within the second an orchestrator expects: tests/faults, on a real server.)
    _assert_unavailable(ready, took)
    assert live.status_code == 200


async def test_a_pool_with_no_free_connection_answers_503_within_the_checkout_bound(
    client: AsyncClient, app_database_url: str
) -> None:
    settings = _settings().model_copy(update={"db_pool_size": 1, "db_max_overflow": 0})
    database = Database.connect(app_database_url, settings, session_class=AuditedSession)
    app = create_app(settings)
    app.state.database = database
    try:
        async with database.engine.connect() as held:  # the pool's only connection
            await held.exec_driver_sql("SELECT 1")
            async with api_client(app, client.headers["Authorization"].split()[1]) as busy:
                started = time.monotonic()
                response = await busy.get("/api/v1/products")
                took = time.monotonic() - started
    finally:
        await database.dispose()

    _assert_unavailable(response, took)
