from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from backoffice.auth.router import install_rate_limiters
from backoffice.core.config import Settings
from tests.conftest import TEST_PASSWORD, _client, create_user, tokens_for

LOGIN = "/api/v1/auth/sessions"
REFRESH = "/api/v1/auth/tokens"
LOGOUT = "/api/v1/auth/sessions/current"
ME = "/api/v1/users/me"

SignIn = Callable[[User], Awaitable[AsyncClient]]


async def login(client: AsyncClient, email: str, password: str = TEST_PASSWORD) -> Response:
    return await client.post(LOGIN, data={"username": email, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def member(session: AsyncSession) -> User:
    return await create_user(session, email="member@example.com", roles=["viewer"])


@pytest.fixture
def rate_limited_settings(app: FastAPI, settings: Settings) -> Settings:
    """The app's settings with a login limit small enough to reach in a test."""
    limited = settings.model_copy(update={"login_rate_limit": "3/minute"})
    app.state.settings = limited
    install_rate_limiters(app, limited)
    return limited


@pytest.fixture
async def sign_in(app: FastAPI, session: AsyncSession, settings: Settings) -> AsyncIterator[SignIn]:
    """Clients signed in as any user, each with a session of its own, closed after the test."""
    async with AsyncExitStack() as clients:

        async def sign_in(user: User) -> AsyncClient:
            pair = await tokens_for(session, settings, user)
            return await clients.enter_async_context(_client(app, pair.access_token))

        yield sign_in
