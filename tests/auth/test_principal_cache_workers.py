"""Two workers (two apps, each with its own lifespan, cache and listener) on one database,
committing for real: a change made through one, or behind both apps' backs, ends the other's
cached principals within the documented bound; a lost listener stops its cache."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backoffice.auth.principal_cache import (
    LISTENER_APPLICATION_NAME,
    STALENESS_BOUND_S,
    PrincipalCache,
)
from backoffice.auth.tokens import decode_access_token
from backoffice.core.config import Settings
from backoffice.core.main import create_app
from tests.auth.principal_changes import (
    API_CHANGES,
    PROBE,
    SQL_CHANGES,
    ApiChange,
    Member,
    SqlChange,
)
from tests.support.http import api_client
from tests.support.users import LOGIN, REFRESH, TEST_PASSWORD, create_user, store_role, tokens_for
from tests.support.waiting import until

pytestmark = pytest.mark.committed

# A new listener connects within its first back-off (0.1 s at most) plus a connection's time.
RECONNECT_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Workers:
    a: FastAPI
    b: FastAPI
    admin_on_a: AsyncClient
    member: Member
    member_email: str
    refresh_token: str
    clients: AsyncExitStack

    def cache(self, app: FastAPI) -> PrincipalCache:
        cache: PrincipalCache = app.state.principal_cache
        return cache

    async def client(self, app: FastAPI, token: str) -> AsyncClient:
        return await self.clients.enter_async_context(api_client(app, token))


async def listening_apps(stack: AsyncExitStack, settings: Settings) -> list[FastAPI]:
    """Two apps (two workers, or two nodes) started in `stack`, each once its principal cache
    listens."""
    apps = [create_app(settings), create_app(settings)]
    for app in apps:
        await stack.enter_async_context(app.router.lifespan_context(app))
    for app in apps:
        cache: PrincipalCache = app.state.principal_cache

        async def serving(cache: PrincipalCache = cache) -> bool:
            return cache.serving

        await until(serving, RECONNECT_WAIT_S, "the first listener connection")
    return apps


@pytest.fixture
async def workers(committed_client: AsyncClient, settings: Settings) -> AsyncIterator[Workers]:
    admin_token = committed_client.headers["Authorization"].removeprefix("Bearer ")
    async with AsyncExitStack() as stack:
        apps = await listening_apps(stack, settings)
        async with apps[0].state.database.sessions() as session:
            role_id, role_name = await store_role(session, {"products": []})
            user = await create_user(session, roles=[role_name])
            pair = await tokens_for(session, settings, user)
        assert user.id is not None
        jti = decode_access_token(settings, pair.access_token).jti
        yield Workers(
            a=apps[0],
            b=apps[1],
            admin_on_a=await stack.enter_async_context(api_client(apps[0], admin_token)),
            member=Member(user.id, role_id, pair.access_token, jti),
            member_email=user.email,
            refresh_token=pair.refresh_token,
            clients=stack,
        )


async def warm(workers: Workers, app: FastAPI) -> AsyncClient:
    """The member's client on `app`, its token in `app`'s cache. Retried: the announcements of
    the fixture's own writes (the member, their role) may still be on their way, and empty the
    cache when they arrive."""
    client = await workers.client(app, workers.member.access_token)

    async def cached() -> bool:
        assert (await client.get(PROBE)).status_code == 200
        return workers.cache(app).get(workers.member.access_token) is not None

    await until(cached, RECONNECT_WAIT_S, "warming the cache")
    return client


async def refused_within_bound(client: AsyncClient, status: int) -> None:
    async def refused() -> bool:
        return (await client.get(PROBE)).status_code == status

    await until(refused, STALENESS_BOUND_S, "the other worker's refusal")


@pytest.mark.parametrize("change", API_CHANGES, ids=lambda change: change.name)
async def test_a_change_through_one_worker_ends_the_others_cached_principal(
    change: ApiChange, workers: Workers
) -> None:
    on_b = await warm(workers, workers.b)
    on_a = await warm(workers, workers.a)

    made = await change.make(workers.admin_on_a, on_a, workers.member)

    assert made.is_success, made.text
    assert (await on_a.get(PROBE)).status_code == change.refused_with  # at once
    await refused_within_bound(on_b, change.refused_with)


@pytest.mark.parametrize("change", SQL_CHANGES, ids=lambda change: change.name)
async def test_a_change_behind_the_apps_backs_ends_every_cached_principal(
    change: SqlChange, workers: Workers, engine: AsyncEngine
) -> None:
    """The triggers, not the app, announce it: another connection, plain SQL."""
    on_b = await warm(workers, workers.b)
    member = workers.member

    async with engine.begin() as connection:
        params = {"user_id": member.user_id, "role_id": member.role_id, "jti": member.jti}
        names = change.statement.compile().params
        await connection.execute(change.statement, {k: v for k, v in params.items() if k in names})

    await refused_within_bound(on_b, change.refused_with)


async def test_logins_and_refreshes_elsewhere_leave_the_cache_alone(workers: Workers) -> None:
    """What happens on every login (the failure count, the lock) and every refresh (the new
    token, the old one's rotation) changes no principal: it must not empty the caches."""
    await warm(workers, workers.b)
    cache = workers.cache(workers.b)
    generation = cache.generation
    async with api_client(workers.a) as anonymous:
        wrong = {"username": workers.member_email, "password": "not the password"}
        assert (await anonymous.post(LOGIN, data=wrong)).status_code == 401
        right = {"username": workers.member_email, "password": TEST_PASSWORD}
        assert (await anonymous.post(LOGIN, data=right)).status_code == 200
        rotated = await anonymous.post(REFRESH, json={"refresh_token": workers.refresh_token})
        assert rotated.status_code == 200

    await asyncio.sleep(STALENESS_BOUND_S / 2)  # any announcement has arrived by now

    assert cache.generation == generation
    assert cache.get(workers.member.access_token) is not None


async def listener_pids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        result = await connection.scalars(
            text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = :name "
                "AND datname = current_database()"
            ),
            {"name": LISTENER_APPLICATION_NAME},
        )
        return list(result)


async def test_a_killed_listener_empties_and_stops_the_cache_until_it_listens_again(
    workers: Workers, engine: AsyncEngine
) -> None:
    on_b = await warm(workers, workers.b)
    cache = workers.cache(workers.b)
    assert len(await listener_pids(engine)) == 2  # one per worker

    async with engine.connect() as connection:
        await connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) AS pid"),
            {"pids": await listener_pids(engine)},
        )

    # The bound is on what a request sees: no answer from the cache once the listener's lease
    # is over, whenever the event loop gets round to emptying it (later on a loaded machine).
    async def stopped() -> bool:
        return not cache.serving and cache.get(workers.member.access_token) is None

    async def emptied() -> bool:
        return len(cache) == 0

    await until(stopped, STALENESS_BOUND_S, "stopping the cache")
    await until(emptied, RECONNECT_WAIT_S, "emptying the cache")
    assert (await on_b.get(PROBE)).status_code == 200  # from the database meanwhile

    async def serving_again() -> bool:
        return cache.serving

    await until(serving_again, RECONNECT_WAIT_S, "the reconnection")
    assert (await on_b.get(PROBE)).status_code == 200
    assert cache.get(workers.member.access_token) is not None

    async def both_listening() -> bool:  # each worker reconnects on its own jittered back-off
        return len(await listener_pids(engine)) == 2

    await until(both_listening, RECONNECT_WAIT_S, "both listeners reconnecting")
