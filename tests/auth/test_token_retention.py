"""Token retention: expired refresh tokens and revoked access tokens are deleted (the
`purge-tokens` command, and a periodic job in the app), live ones never, and a rotated token
replayed after a purge still revokes its family."""

import asyncio
import re
import sys
import time
import uuid
from collections.abc import MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col

from backoffice.audit.models import DataChange
from backoffice.auth.models import RefreshToken, User, UserRevokedToken
from backoffice.auth.retention import (
    PURGE_LOCK_KEY,
    PurgeResult,
    purge_expired_tokens,
    token_purge_lifespan,
)
from backoffice.core.config import Settings
from backoffice.core.database import Database
from backoffice.core.main import create_app
from tests.live_server import free_port, server_environment
from tests.support.http import assert_problem
from tests.support.users import REFRESH, create_user, tokens_for

PAST = timedelta(days=-1)
FUTURE = timedelta(days=1)
# The periodic job every 60 ms (and its first run within 60 ms of the start).
TINY_INTERVAL_MINUTES = 0.001
WAIT_S = 30.0  # generous: the CI machine is slow


async def add_refresh_token(
    session: AsyncSession,
    user: User,
    expires_in: timedelta,
    *,
    parent: RefreshToken | None = None,
    revoked: bool = False,
) -> RefreshToken:
    now = datetime.now(UTC)
    assert user.id is not None
    token = RefreshToken(
        user_id=user.id,
        token_hash=uuid.uuid4().hex,
        family_id=parent.family_id if parent else uuid.uuid4(),
        parent_id=parent.id if parent else None,
        expires_at=now + expires_in,
        revoked_at=now if revoked else None,
    )
    session.add(token)
    await session.flush()
    if parent is not None:  # rotated: the parent is spent and points at its replacement
        parent.revoked_at, parent.replaced_by_id = now, token.id
        await session.flush()
    return token


async def add_revoked_access_token(session: AsyncSession, user: User, expires_in: timedelta) -> str:
    assert user.id is not None
    jti = uuid.uuid4().hex
    session.add(
        UserRevokedToken(jti=jti, user_id=user.id, expires_at=datetime.now(UTC) + expires_in)
    )
    await session.flush()
    return jti


async def refresh_token_ids(session: AsyncSession) -> set[int]:
    return set(await session.scalars(select(col(RefreshToken.id))))


async def revoked_jtis(session: AsyncSession) -> set[str]:
    return set(await session.scalars(select(col(UserRevokedToken.jti))))


async def test_purge_deletes_expired_tokens_of_both_tables_and_keeps_live_ones(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    """In batches of two, so the purge has to loop: 5 expired refresh tokens and 3 expired
    revoked access tokens go; the live ones, a spent (rotated) one included, stay."""
    user = await create_user(session)
    spent_but_live = await add_refresh_token(session, user, FUTURE)
    live = await add_refresh_token(session, user, FUTURE, parent=spent_but_live)
    logged_out_live = await add_refresh_token(session, user, FUTURE, revoked=True)
    # An expired ancestor of a live token: its deletion unlinks the live one.
    expired_parent = await add_refresh_token(session, user, PAST)
    live_child = await add_refresh_token(session, user, FUTURE, parent=expired_parent)
    for revoked in (False, True, True, False):
        await add_refresh_token(session, user, PAST, revoked=revoked)
    live_jti = await add_revoked_access_token(session, user, FUTURE)
    for _ in range(3):
        await add_revoked_access_token(session, user, PAST)
    await session.commit()
    kept = {spent_but_live.id, live.id, logged_out_live.id, live_child.id}
    changes_before = await session.scalar(select(func.count()).select_from(DataChange))

    result = await purge_expired_tokens(sessionmaker, batch_size=2)

    assert result == PurgeResult(refresh_tokens=5, revoked_access_tokens=3, complete=True)
    assert await refresh_token_ids(session) == kept
    unlinked = select(col(RefreshToken.parent_id)).where(col(RefreshToken.id) == live_child.id)
    assert await session.scalar(unlinked) is None
    assert await revoked_jtis(session) == {live_jti}
    # Tokens are not audited entities: a purge writes no data-change rows.
    assert await session.scalar(select(func.count()).select_from(DataChange)) == changes_before


async def test_a_rotated_token_replayed_after_a_purge_still_revokes_its_family(
    anonymous_client: AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    settings: Settings,
) -> None:
    user = await create_user(session)
    first = await tokens_for(session, settings, user)
    rotated = await anonymous_client.post(REFRESH, json={"refresh_token": first.refresh_token})
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]

    await purge_expired_tokens(sessionmaker)
    replay = await anonymous_client.post(REFRESH, json={"refresh_token": first.refresh_token})
    after_replay = await anonymous_client.post(REFRESH, json={"refresh_token": second})

    assert_problem(replay, 401)
    assert_problem(after_replay, 401)  # the family was revoked: the thief's token is dead too
    family = select(col(RefreshToken.revoked_at)).where(col(RefreshToken.user_id) == user.id)
    assert None not in set(await session.scalars(family))


async def test_a_purge_leaves_the_work_to_another_purger_holding_the_lock(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
) -> None:
    """Another node purging (it holds the advisory lock): this one deletes nothing, at once."""
    user = await create_user(session)
    await add_refresh_token(session, user, PAST)
    await session.commit()

    async with engine.begin() as other_node:
        await other_node.execute(select(func.pg_advisory_xact_lock(PURGE_LOCK_KEY)))
        result = await asyncio.wait_for(purge_expired_tokens(sessionmaker), WAIT_S)

    assert result == PurgeResult(refresh_tokens=0, revoked_access_tokens=0, complete=False)
    assert len(await refresh_token_ids(session)) == 1


@pytest.mark.committed
async def test_the_running_app_purges_expired_tokens_periodically(
    committed_client: AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    """The app's own lifespan, its interval tiny: the expired rows go, the live session (the
    committed client's) stays and keeps working."""
    async with AsyncSession(engine, expire_on_commit=False) as owner:
        user = await owner.scalar(select(User).where(col(User.email) == "committed@example.com"))
        assert user is not None
        live = await refresh_token_ids(owner)
        expired = {(await add_refresh_token(owner, user, PAST)).id for _ in range(3)}
        await add_revoked_access_token(owner, user, PAST)
        await owner.commit()
    app = create_app(
        settings.model_copy(update={"token_purge_interval_minutes": TINY_INTERVAL_MINUTES})
    )

    async with app.router.lifespan_context(app):
        deadline = time.monotonic() + WAIT_S
        async with AsyncSession(engine) as owner:
            while (await refresh_token_ids(owner)) != live or await revoked_jtis(owner):
                assert time.monotonic() < deadline, "the job did not purge in time"
                await asyncio.sleep(0.05)

    assert not expired & live
    assert (await committed_client.get("/api/v1/users/me")).status_code == 200


async def test_the_purge_job_survives_an_unreachable_database(settings: Settings) -> None:
    """Its engine pointed at a closed port: every run fails, each failure is one warning that
    names the error's class (no traceback, no message), and the job keeps trying until the
    app stops."""
    app = FastAPI()
    app.state.settings = settings.model_copy(
        update={"token_purge_interval_minutes": TINY_INTERVAL_MINUTES}
    )
    app.state.database = Database.connect(
        f"postgresql://nobody@127.0.0.1:{free_port()}/nowhere", settings
    )
    try:
        with structlog.testing.capture_logs() as logs:
            async with token_purge_lifespan(app):
                deadline = time.monotonic() + WAIT_S
                while len(_failures(logs)) < 3:
                    assert time.monotonic() < deadline, f"fewer than 3 failed runs: {logs}"
                    await asyncio.sleep(0.05)
            after_shutdown = len(_failures(logs))
            await asyncio.sleep(0.2)  # three intervals: a job still running would log again
    finally:
        await app.state.database.dispose()

    assert len(_failures(logs)) == after_shutdown
    assert {tuple(sorted(line)) for line in _failures(logs)} == {("error", "event", "log_level")}
    # A class name (ConnectionRefusedError here), never a message that could quote data.
    assert all(re.fullmatch(r"[A-Za-z]+Error", line["error"]) for line in _failures(logs))
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "token-purge"]


def _failures(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "auth.token_purge_failed"]


async def test_an_interval_of_zero_switches_the_job_off(settings: Settings) -> None:
    app = FastAPI()
    app.state.settings = settings.model_copy(update={"token_purge_interval_minutes": 0})

    async with token_purge_lifespan(app):
        assert not [task for task in asyncio.all_tasks() if task.get_name() == "token-purge"]


@pytest.mark.committed
async def test_the_command_line_purges_expired_tokens(
    committed_client: AsyncClient,
    engine: AsyncEngine,
    app_database_url: str,
    tmp_path: Path,
) -> None:
    """`python -m backoffice purge-tokens` (`task purge-tokens`), as the app's database role."""
    async with AsyncSession(engine, expire_on_commit=False) as owner:
        user = await owner.scalar(select(User).where(col(User.email) == "committed@example.com"))
        assert user is not None
        live = await refresh_token_ids(owner)
        for _ in range(2):
            await add_refresh_token(owner, user, PAST)
        live_jti = await add_revoked_access_token(owner, user, FUTURE)
        await add_revoked_access_token(owner, user, PAST)
        await owner.commit()
    environment = server_environment(ENVIRONMENT="test", DATABASE_URL=app_database_url)

    purge = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backoffice", "purge-tokens",
        cwd=tmp_path, env=environment, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(purge.communicate(), timeout=60)

    assert purge.returncode == 0, output.decode()
    assert b"purged 2 expired refresh tokens and 1 expired revoked access tokens\n" in output
    async with AsyncSession(engine) as owner:
        assert await refresh_token_ids(owner) == live
        assert await revoked_jtis(owner) == {live_jti}
