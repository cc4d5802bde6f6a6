"""App instances of their own on the committed database (tests/conftest.py's
`committed_client`): each with its own connection pool, as separate processes or nodes have."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from httpx import AsyncClient

from backoffice.audit.changes import AuditedSession
from backoffice.core.config import Settings
from backoffice.core.database import Database
from backoffice.core.main import create_app
from tests.support.http import api_client

# Another node, signed in as the committed client's user; settings may differ from the tests'.
type StartNode = Callable[..., Awaitable[AsyncClient]]


@pytest.fixture
async def start_node(
    committed_client: AsyncClient, settings: Settings, app_database_url: str
) -> AsyncIterator[StartNode]:
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> AsyncClient:
            node_settings = settings.model_copy(update=overrides)
            app = create_app(node_settings)
            database = Database.connect(
                app_database_url, node_settings, session_class=AuditedSession
            )
            app.state.database = database
            stack.push_async_callback(database.dispose)
            client = await stack.enter_async_context(api_client(app))
            client.headers["authorization"] = committed_client.headers["authorization"]
            return client

        yield start
