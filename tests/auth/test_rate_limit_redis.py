"""The login limit shared through a real Redis, as several workers or hosts would share it."""

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from backoffice.auth.models import User
from backoffice.auth.rate_limit import RateLimiter
from backoffice.core.config import Settings
from backoffice.core.main import create_app
from tests.support.http import api_client
from tests.support.services import redis_server
from tests.support.users import login


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a free port, for this test session only."""
    with redis_server() as url:
        yield url


async def _workers(app: FastAPI, settings: Settings) -> list[FastAPI]:
    """Two app instances over the test database, as two worker processes would be: each
    builds its own limiter, so only a shared storage can make them agree."""
    workers = []
    for _ in range(2):
        worker = create_app(settings)
        worker.state.database = app.state.database
        workers.append(worker)
    return workers


async def _four_logins_across(workers: list[FastAPI], email: str) -> list[int]:
    async with api_client(workers[0]) as first, api_client(workers[1]) as second:
        return [(await login(client, email)).status_code for client in (first, second) * 2]


async def test_login_limit_is_shared_through_redis(
    app: FastAPI, settings: Settings, redis_url: str, member: User
) -> None:
    shared = settings.model_copy(
        update={"login_rate_limit": "3/minute", "rate_limit_storage_url": redis_url}
    )
    await RateLimiter.for_login(shared).strategy.storage.reset()

    statuses = await _four_logins_across(await _workers(app, shared), member.email)

    assert statuses == [200, 200, 200, 429]


async def test_without_redis_each_worker_counts_alone(
    app: FastAPI, settings: Settings, member: User
) -> None:
    """The control for the test above: in-memory limits are per process."""
    local = settings.model_copy(update={"login_rate_limit": "3/minute"})

    statuses = await _four_logins_across(await _workers(app, local), member.email)

    assert statuses == [200, 200, 200, 200]
