from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from backoffice.core.config import Settings
from tests.conftest import TEST_PASSWORD, _client, create_user

LOGIN = "/api/v1/auth/sessions"
REFRESH = "/api/v1/auth/tokens"
LOGOUT = "/api/v1/auth/sessions/current"
ME = "/api/v1/users/me"


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
    return limited


@pytest.fixture
async def member_client(
    app: FastAPI, session: AsyncSession, settings: Settings, member: User
) -> AsyncIterator[AsyncClient]:
    from tests.conftest import tokens_for

    pair = await tokens_for(session, settings, member)
    async with _client(app, pair.access_token) as client:
        yield client
