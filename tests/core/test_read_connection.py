"""The hot read routes' connections (core.database.ReadConnection): how a failing driver
connection is answered, whatever the driver calls the failure."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import asyncpg
import pytest
from sqlalchemy import select

from backoffice.core.database import Driver, ReadConnection
from backoffice.core.errors import DatabaseUnavailableError, database_unavailable

# What asyncpg raises on a connection the server dropped, by the state it caught it in (the
# outage test met InternalClientError: "cannot switch to state 12; another operation (2) is
# in progress"). Each must be a 503 for the client, never a 500.
CONNECTION_FAILURES = [
    asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ConnectionResetError("Connection reset by peer"),
]


class _FailingDriver:
    """A connection whose every statement meets `failure`, as one the server dropped."""

    def __init__(self, failure: Exception) -> None:
        self.failure = failure

    async def fetch(self, _query: str, *_arguments: object) -> list[asyncpg.Record]:
        raise self.failure


@pytest.mark.parametrize("failure", CONNECTION_FAILURES, ids=lambda failure: type(failure).__name__)
async def test_a_lost_driver_connection_is_the_database_being_unavailable(
    failure: Exception,
) -> None:
    @asynccontextmanager
    async def connections() -> AsyncIterator[Driver]:
        yield cast(Driver, _FailingDriver(failure))

    with pytest.raises(Exception) as raised:  # noqa: PT011  # the class is what is checked
        await ReadConnection(connections).fetch_statement(select(1))

    # A 503 problem either way: ours, or one the error mapper recognises as an outage.
    assert isinstance(raised.value, DatabaseUnavailableError) or database_unavailable(raised.value)
