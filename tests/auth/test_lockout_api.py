"""Getting out of a lockout: an administrator's `DELETE /users/{id}/lock`, and the command
line for when no administrator can log in."""

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from httpx import AsyncClient
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from backoffice.audit.models import DataChange
from backoffice.auth.models import User
from backoffice.core.config import Settings
from tests.support.http import assert_problem
from tests.support.users import SignIn, create_user, login


async def lock(session: AsyncSession, user: User, settings: Settings) -> None:
    """The state LOGIN_MAX_FAILURES wrong passwords leave (without spending seconds of argon2)."""
    await session.execute(
        update(User)
        .where(User.id == user.id)  # type: ignore[arg-type]
        .values(
            failed_login_count=settings.login_max_failures,
            locked_until=datetime.now(UTC) + timedelta(minutes=settings.login_lockout_minutes),
        )
    )
    await session.commit()


async def test_an_admin_sees_the_lock_removes_it_and_the_owner_logs_in_again(
    client: AsyncClient,
    anonymous_client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    member: User,
) -> None:
    await lock(session, member, settings)
    assert (await login(anonymous_client, member.email)).status_code == 401
    shown = (await client.get(f"/api/v1/users/{member.id}")).json()
    assert datetime.fromisoformat(shown["locked_until"]) > datetime.now(UTC)

    response = await client.delete(f"/api/v1/users/{member.id}/lock")

    assert response.status_code == 204
    assert (await client.get(f"/api/v1/users/{member.id}")).json()["locked_until"] is None
    assert (await login(anonymous_client, member.email)).status_code == 200
    # Recorded like any other change to a user, by whom and from which request.
    change = await session.scalar(
        select(DataChange)
        .where(DataChange.entity_type == "user", DataChange.entity_id == str(member.id))  # type: ignore[arg-type]
        .where(DataChange.request_id == response.headers["x-request-id"])  # type: ignore[arg-type]
    )
    assert change is not None
    assert change.new_values == {"failed_login_count": 0, "locked_until": None}


async def test_unlocking_an_account_that_is_not_locked_is_a_no_op(
    client: AsyncClient, member: User
) -> None:
    response = await client.delete(f"/api/v1/users/{member.id}/lock")

    assert response.status_code == 204


async def test_unlocking_needs_users_update(
    sign_in: SignIn, session: AsyncSession, settings: Settings, member: User
) -> None:
    reader = await create_user(session, email="reader@example.com", roles=["viewer"])
    await lock(session, member, settings)

    response = await (await sign_in(reader)).delete(f"/api/v1/users/{member.id}/lock")

    assert_problem(response, 403, "forbidden")
    assert "users:update" in response.json()["detail"]


async def test_only_a_superuser_unlocks_a_superuser(
    sign_in: SignIn, session: AsyncSession, settings: Settings
) -> None:
    admin = await create_user(session, email="user-admin@example.com", roles=["admin"])
    root = await create_user(session, email="locked-root@example.com", is_superuser=True)
    await lock(session, root, settings)

    response = await (await sign_in(admin)).delete(f"/api/v1/users/{root.id}/lock")

    assert_problem(response, 403, "forbidden")
    stored = await session.scalar(
        text("SELECT locked_until FROM users WHERE id = :id"), {"id": root.id}
    )
    assert stored is not None


async def test_unlocking_an_unknown_user_returns_404(client: AsyncClient) -> None:
    response = await client.delete("/api/v1/users/999999/lock")

    assert_problem(response, 404)


async def test_unlocking_with_a_stale_if_match_returns_412(
    client: AsyncClient, member: User
) -> None:
    response = await client.delete(f"/api/v1/users/{member.id}/lock", headers={"If-Match": '"999"'})

    assert_problem(response, 412)


@pytest.mark.committed
async def test_the_command_line_unlocks_the_only_superuser(
    committed_client: AsyncClient,
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    """`python -m backoffice unlock-user EMAIL` (`task unlock-user`): the way out when the
    account locked out is the only one that could call the endpoint."""
    email = "committed@example.com"  # committed_client's superuser
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE users SET locked_until = now() + interval '15 minutes' WHERE email = :e"),
            {"e": email},
        )
    settings_names = {name.upper() for name in Settings.model_fields}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in settings_names}
    environment |= {"ENVIRONMENT": "test", "DATABASE_URL": database_url}

    unlocked = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backoffice", "unlock-user", email.upper(),
        cwd=tmp_path, env=environment, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(unlocked.communicate(), timeout=60)
    unknown = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backoffice", "unlock-user", "nobody@example.com",
        cwd=tmp_path, env=environment, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, error = await asyncio.wait_for(unknown.communicate(), timeout=60)

    assert unlocked.returncode == 0, output.decode()
    assert b"unlocked user" in output
    async with engine.connect() as connection:
        locked_until = await connection.scalar(
            text("SELECT locked_until FROM users WHERE email = :e"), {"e": email}
        )
    assert locked_until is None
    assert unknown.returncode != 0
    assert b"no user with email" in error
