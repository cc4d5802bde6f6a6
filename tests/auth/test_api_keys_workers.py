"""API keys on two workers (two apps, each with its lifespan, principal cache and listener) on
one database, committing for real: a key revoked through one worker, or behind both apps'
backs, is refused by the other within the principal cache's bound; recording keys' last use
empties no cache; and a worker's last record of use is written when it shuts down."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backoffice.auth.api_keys import ApiKeyUsage
from backoffice.auth.principal_cache import STALENESS_BOUND_S, PrincipalCache
from backoffice.core.config import Settings
from backoffice.core.main import create_app
from tests.auth.test_principal_cache_workers import RECONNECT_WAIT_S, listening_apps
from tests.support.api_keys import API_KEYS, service_key
from tests.support.factories import PRODUCTS
from tests.support.http import api_client
from tests.support.waiting import until

pytestmark = pytest.mark.committed


@dataclass(frozen=True, slots=True)
class KeyWorkers:
    a: FastAPI
    b: FastAPI
    admin_on_a: AsyncClient
    key: dict[str, Any]
    clients: AsyncExitStack

    async def with_key(self, app: FastAPI) -> AsyncClient:
        return await self.clients.enter_async_context(api_client(app, self.key["api_key"]))


@pytest.fixture
async def key_workers(
    committed_client: AsyncClient, settings: Settings
) -> AsyncIterator[KeyWorkers]:
    admin_token = committed_client.headers["Authorization"].removeprefix("Bearer ")
    async with AsyncExitStack() as stack:
        apps = await listening_apps(stack, settings)
        admin = await stack.enter_async_context(api_client(apps[0], admin_token))
        key = await service_key(admin, ["products:read"])
        yield KeyWorkers(apps[0], apps[1], admin, key, stack)


async def warm(workers: KeyWorkers, app: FastAPI) -> AsyncClient:
    """A client with the key on `app`, the key's principal in `app`'s cache (retried: the
    announcements of the fixture's own writes may still be on their way)."""
    client = await workers.with_key(app)
    cache: PrincipalCache = app.state.principal_cache

    async def cached() -> bool:
        assert (await client.get(PRODUCTS)).status_code == 200
        return cache.get(workers.key["api_key"]) is not None

    await until(cached, RECONNECT_WAIT_S, "warming the cache")
    return client


async def refused_within_bound(client: AsyncClient) -> None:
    async def refused() -> bool:
        return (await client.get(PRODUCTS)).status_code == 401

    await until(refused, STALENESS_BOUND_S, "the other worker's refusal")


async def test_a_key_revoked_on_one_worker_is_refused_by_the_other_within_the_bound(
    key_workers: KeyWorkers,
) -> None:
    on_b = await warm(key_workers, key_workers.b)
    on_a = await warm(key_workers, key_workers.a)

    revoked = await key_workers.admin_on_a.delete(f"{API_KEYS}/{key_workers.key['id']}")

    assert revoked.status_code == 204
    assert (await on_a.get(PRODUCTS)).status_code == 401  # at once
    await refused_within_bound(on_b)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE api_keys SET revoked_at = now() WHERE id = :id",
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :id",
        "UPDATE api_keys SET permissions = '{}' WHERE id = :id",
        "DELETE FROM api_keys WHERE id = :id",
    ],
    ids=["revoked", "expired", "permissions-removed", "deleted"],
)
async def test_a_key_changed_behind_the_apps_backs_is_refused_within_the_bound(
    key_workers: KeyWorkers, engine: AsyncEngine, statement: str
) -> None:
    """The api_keys triggers, not the app, announce it: another connection, plain SQL."""
    on_b = await warm(key_workers, key_workers.b)

    async with engine.begin() as connection:
        await connection.execute(text(statement), {"id": key_workers.key["id"]})

    async def refused() -> bool:
        return (await on_b.get(PRODUCTS)).status_code in {401, 403}

    await until(refused, STALENESS_BOUND_S, "the other worker's refusal")


async def test_recording_last_use_empties_no_cache(key_workers: KeyWorkers) -> None:
    on_b = await warm(key_workers, key_workers.b)
    await warm(key_workers, key_workers.a)
    cache: PrincipalCache = key_workers.b.state.principal_cache
    generation = cache.generation

    usage: ApiKeyUsage = key_workers.a.state.api_key_usage
    assert await usage.flush(key_workers.a.state.database.sessions) == 1
    await asyncio.sleep(STALENESS_BOUND_S / 2)  # any announcement has arrived by now

    assert cache.generation == generation
    assert cache.get(key_workers.key["api_key"]) is not None
    assert (await on_b.get(PRODUCTS)).status_code == 200


async def test_a_worker_writes_its_last_record_of_use_when_it_stops(
    committed_client: AsyncClient, settings: Settings, engine: AsyncEngine
) -> None:
    key = await service_key(committed_client, ["products:read"])
    app = create_app(settings)
    async with app.router.lifespan_context(app), api_client(app, key["api_key"]) as machine:
        assert (await machine.get(PRODUCTS)).status_code == 200
        async with engine.connect() as connection:
            query = text("SELECT last_used_at FROM api_keys WHERE id = :id")
            assert (await connection.scalar(query, {"id": key["id"]})) is None  # not yet

    async with engine.connect() as connection:
        assert (await connection.scalar(query, {"id": key["id"]})) is not None
