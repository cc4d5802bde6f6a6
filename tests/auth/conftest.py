import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backoffice.auth.models import User
from backoffice.auth.principal_cache import PrincipalCache, attach
from backoffice.auth.router import install_rate_limiters
from backoffice.core.config import Settings
from tests.support.http import api_client
from tests.support.users import SignIn, create_user, tokens_for


@pytest.fixture
def principal_cache(settings: Settings) -> PrincipalCache:
    """A cache that serves without a listener: the tests' requests and their own writes all go
    through the app's sessions, which empty it themselves (the worker's own writes)."""
    cache = PrincipalCache(settings.principal_cache_size)
    cache.renew(math.inf)
    return cache


@pytest.fixture
def app(
    app: FastAPI,
    sessionmaker: async_sessionmaker[AsyncSession],
    principal_cache: PrincipalCache,
) -> FastAPI:
    """The shared app with its principal cache on, as every app has it (PRINCIPAL_CACHE_ENABLED
    is on by default): every auth test, the security ones above all, runs with it."""
    attach(sessionmaker, principal_cache)
    app.state.principal_cache = principal_cache
    return app


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
            return await clients.enter_async_context(api_client(app, pair.access_token))

        yield sign_in
