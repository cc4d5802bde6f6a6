"""No secret leaks into logs or tables, and authentication costs one query per request."""

import json

import pytest
import structlog
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from backoffice.auth.models import User
from backoffice.auth.principal_cache import PrincipalCache
from backoffice.auth.service import verify_access_token
from backoffice.core.config import Settings
from backoffice.core.logging import REDACTED, configure_logging
from tests.support.http import bearer
from tests.support.users import LOGOUT, ME, REFRESH, TEST_PASSWORD, login, tokens_for

NEW_PASSWORD = "another long passphrase"  # test data


async def _every_flow(client: AsyncClient, user: User) -> list[str]:
    """Log in (also wrongly), refresh, replay, change the password, log out; return every
    token the server handed out."""
    await login(client, user.email, "a wrong password here")
    first = (await login(client, user.email)).json()
    second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
    await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})  # replay
    third = (await login(client, user.email)).json()
    changed = await client.put(
        f"{ME}/password",
        json={"current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(third["access_token"]),
    )
    fourth = changed.json()
    await client.delete(LOGOUT, headers=bearer(fourth["access_token"]))
    return [
        pair[kind]
        for pair in (first, second, third, fourth)
        for kind in ("access_token", "refresh_token")
    ]


async def test_no_password_or_token_reaches_the_logs(
    anonymous_client: AsyncClient,
    member: User,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(settings)  # bind the log stream to this test's captured stderr

    tokens = await _every_flow(anonymous_client, member)

    logged = capsys.readouterr().err
    assert "auth.login_succeeded" in logged  # the flows did log
    assert "auth.refresh_token_reused" in logged
    for secret in [TEST_PASSWORD, NEW_PASSWORD, "a wrong password here", *tokens]:
        assert secret not in logged


async def test_no_password_or_token_is_stored_in_the_clear(
    anonymous_client: AsyncClient, member: User, connection: AsyncConnection
) -> None:
    tokens = await _every_flow(anonymous_client, member)

    # Partitions are read through their table (the app's role has no right on them).
    tables = await connection.scalars(
        text(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'p') AND NOT relispartition"
        )
    )
    dump = ""
    for table in list(tables):
        rows = await connection.scalars(text(f'SELECT row_to_json(t)::text FROM "{table}" t'))  # noqa: S608  # catalog names
        dump += "\n".join(rows)
    assert "$argon2id$" in dump  # the hashes are there...
    for secret in [TEST_PASSWORD, NEW_PASSWORD, *tokens]:
        assert secret not in dump  # ...and nothing else


def test_log_redaction_masks_secret_keys_whoever_logs_them(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(settings)

    structlog.get_logger("test").warning(
        "careless", password="hunter2", refresh_token="rt", Authorization="Bearer x", user_id=7
    )

    logged = capsys.readouterr().err
    assert "hunter2" not in logged
    assert "Bearer x" not in logged
    assert REDACTED in logged
    assert "user_id" in logged


async def test_authentication_with_permissions_is_one_query(
    session: AsyncSession, settings: Settings, member: User, statements: list[str]
) -> None:
    pair = await tokens_for(session, settings, member)
    statements.clear()

    principal, _ = await verify_access_token(session, settings, pair.access_token)

    assert len(statements) == 1, statements
    assert principal.id == member.id
    assert {str(p) for p in principal.permissions} >= {"products:read", "tasks:read"}


async def test_an_authenticated_read_is_two_queries_cold_and_one_warm(
    app: FastAPI,
    client: AsyncClient,
    statements: list[str],
    principal_cache: PrincipalCache,
) -> None:
    created = (
        await client.post("/api/v1/products", json={"sku": "Q-1", "name": "q", "price": "1.00"})
    ).json()
    principal_cache.clear()
    statements.clear()

    cold = await client.get(f"/api/v1/products/{created['id']}")
    assert len(statements) == 2, json.dumps(statements, indent=1)  # who you are; the product
    statements.clear()
    warm = await client.get(f"/api/v1/products/{created['id']}")

    assert cold.status_code == warm.status_code == 200
    assert len(statements) == 1, json.dumps(statements, indent=1)  # the product: a known token
