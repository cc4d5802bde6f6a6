"""Connections lost under the app, on an app with a real pool that commits.

Lost during COMMIT: the client cannot be told "created", nor "nothing happened". It gets a
503 `commit-outcome-unknown` problem with Retry-After, and the app's next request runs on a
healthy connection. Closed by the server while idle in the pool (a restart, a failover, an
administrator ending sessions): the pool never hands such a connection to a request.
"""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from backoffice.core.database import Database
from backoffice.core.errors import RETRY_AFTER_S
from tests.support.factories import PRODUCTS
from tests.support.http import assert_problem


def _database_of(client: AsyncClient) -> Database:
    transport = client._transport
    assert isinstance(transport, ASGITransport)
    app: FastAPI = transport.app  # type: ignore[assignment]  # the committed app, a FastAPI
    database: Database = app.state.database
    return database


@contextmanager
def _connection_lost_at_next_commit(database: Database) -> Iterator[list[int]]:
    """The next COMMIT the app sends goes out on a connection that has just been cut (the
    driver's socket closed under it), as when the network drops at that instant."""
    cut: list[int] = []

    def cut_the_connection(connection: Connection, *_: Any) -> None:
        if not cut:
            cut.append(1)
            connection.connection.driver_connection.terminate()  # type: ignore[union-attr]  # asyncpg's

    engine = database.engine.sync_engine
    event.listen(engine, "commit", cut_the_connection)
    try:
        yield cut
    finally:
        event.remove(engine, "commit", cut_the_connection)


async def test_a_connection_lost_during_commit_is_a_503_outcome_unknown_never_a_201(
    committed_client: AsyncClient,
) -> None:
    database = _database_of(committed_client)

    with _connection_lost_at_next_commit(database) as cut:
        response = await committed_client.post(
            PRODUCTS, json={"sku": "CUT-1", "name": "Cut", "price": "1.00"}
        )
    after = await committed_client.get(PRODUCTS, params={"limit": 100})

    assert cut, "no COMMIT was sent"
    assert_problem(response, 503, "commit-outcome-unknown")
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)
    # The next request gets a working connection (the cut one was thrown away), and reading
    # back is how a client learns the outcome: here the server rolled it back.
    assert after.status_code == 200
    assert "CUT-1" not in [product["sku"] for product in after.json()["items"]]


async def test_connections_the_server_closed_while_idle_are_never_handed_to_a_request(
    committed_client: AsyncClient, engine: AsyncEngine
) -> None:
    database = _database_of(committed_client)
    # Several connections in the pool, idle.
    warm = await asyncio.gather(*(committed_client.get(PRODUCTS) for _ in range(4)))
    assert {response.status_code for response in warm} == {200}
    app_role = database.engine.url.username
    async with engine.connect() as owner:
        ended = await owner.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE usename = :role AND pid <> pg_backend_pid()"
            ),
            {"role": app_role},
        )
    assert ended
    await asyncio.sleep(0.1)  # the server's goodbye reaches the idle sockets

    answers = await asyncio.gather(*(committed_client.get(PRODUCTS) for _ in range(4)))

    assert [response.status_code for response in answers] == [200] * 4
