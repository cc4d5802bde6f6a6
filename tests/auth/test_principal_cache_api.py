"""The principal cache changes no answer: every change to what a principal is made of takes
effect on the very next request of the worker that made it, the cache warm with the token."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import RefreshToken
from backoffice.auth.principal_cache import PrincipalCache
from backoffice.auth.service import verify_access_token
from backoffice.auth.tokens import create_access_token, decode_access_token
from backoffice.core.config import Settings
from tests.auth.principal_changes import API_CHANGES, PROBE, ApiChange, Member
from tests.support.http import api_client, assert_problem
from tests.support.users import ME, create_user, store_role, tokens_for


@pytest.fixture
async def member(session: AsyncSession, settings: Settings) -> Member:
    role_id, role_name = await store_role(session, {"products": []})
    user = await create_user(session, roles=[role_name])
    assert user.id is not None
    token = (await tokens_for(session, settings, user)).access_token
    return Member(user.id, role_id, token, decode_access_token(settings, token).jti)


@pytest.fixture
async def member_client(app: FastAPI, member: Member) -> AsyncIterator[AsyncClient]:
    async with api_client(app, member.access_token) as client:
        yield client


@pytest.mark.parametrize("change", API_CHANGES, ids=lambda change: change.name)
async def test_a_change_ends_a_cached_principal_on_the_next_request(
    change: ApiChange,
    client: AsyncClient,
    member_client: AsyncClient,
    member: Member,
    principal_cache: PrincipalCache,
) -> None:
    assert (await member_client.get(PROBE)).status_code == 200
    assert principal_cache.get(member.access_token) is not None  # warm

    made = await change.make(client, member_client, member)

    assert made.is_success, made.text
    assert_problem(await member_client.get(PROBE), change.refused_with)


async def test_a_known_token_is_served_from_the_cache_until_something_changes(
    client: AsyncClient, member_client: AsyncClient, member: Member, principal_cache: PrincipalCache
) -> None:
    """The converse: unrelated writes (a product, another user's login bookkeeping, this
    user's own profile) leave the cached principal in place."""
    assert (await member_client.get(PROBE)).status_code == 200
    generation = principal_cache.generation

    created = await client.post(PROBE, json={"sku": "C-1", "name": "c", "price": "1.00"})
    assert created.status_code == 201

    assert principal_cache.generation == generation
    assert principal_cache.get(member.access_token) is not None


async def test_an_expired_token_with_a_cached_principal_is_refused(
    app: FastAPI, session: AsyncSession, settings: Settings, principal_cache: PrincipalCache
) -> None:
    """Cached while valid, refused from its `exp` on, as PyJWT refuses it."""
    user = await create_user(session, is_superuser=True)
    assert user.id is not None
    pair = await tokens_for(session, settings, user)  # a live session for the token below
    lifetime = timedelta(minutes=settings.access_token_ttl_minutes)
    session_id = decode_access_token(settings, pair.access_token).session_id
    # Issued so that it expires within the next two seconds (whole seconds, as JWT has them).
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    token = create_access_token(
        settings,
        user_id=user.id,
        token_version=user.token_version,
        session_id=session_id,
        now=expires - lifetime,
    ).token
    async with api_client(app, token) as short_lived:
        assert (await short_lived.get(ME)).status_code == 200
        assert principal_cache.get(token) is not None

        await asyncio.sleep((expires - datetime.now(UTC)).total_seconds() + 0.05)

        assert_problem(await short_lived.get(ME), 401)
    assert principal_cache.get(token) is None


async def test_a_cached_answer_holds_no_longer_than_the_tokens_session(
    session: AsyncSession, settings: Settings
) -> None:
    """A session (its live refresh tokens) may end before its access token expires: the
    answer is cached until whichever comes first."""
    user = await create_user(session, is_superuser=True)
    pair = await tokens_for(session, settings, user)
    soon = datetime.now(UTC) + timedelta(minutes=1)
    await session.execute(update(RefreshToken).values(expires_at=soon))

    _, valid_until = await verify_access_token(session, settings, pair.access_token)

    assert valid_until == soon
