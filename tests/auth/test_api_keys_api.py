"""Service accounts and their API keys, through HTTP: shown once, stored as a hash, bounded by
their creator's permissions, refused from the next request on once revoked or expired, rate
limited per key, and named in the audit trail of what they do."""

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from backoffice.audit.access import AccessLogWriter
from backoffice.audit.models import AccessLog
from backoffice.auth.api_keys import API_KEY_PATTERN, ApiKeyUsage, install_api_keys
from backoffice.auth.api_keys import new_api_key as new_api_key_value
from backoffice.auth.models import ApiKey, User
from backoffice.auth.repository import ApiKeyRepository
from backoffice.core.config import Environment, Settings
from backoffice.core.logging import configure_logging, redact_secrets
from tests.support.api_keys import (
    API_KEYS,
    SERVICE_ACCOUNTS,
    new_api_key,
    new_service_account,
    service_key,
)
from tests.support.audit import changes_of
from tests.support.database import stored
from tests.support.factories import PRODUCTS, USERS, product_payload
from tests.support.http import api_client, assert_problem, walk_pages
from tests.support.users import LOGOUT, ME, TEST_PASSWORD, SignIn, login, user_with_grants


def key_client(app: FastAPI, key: dict[str, object]) -> AsyncClient:
    return api_client(app, str(key["api_key"]))


async def stored_key(session: AsyncSession, key_id: int) -> ApiKey:
    key = await stored(session, ApiKey, key_id)
    assert key is not None
    return key


# --- service accounts -----------------------------------------------------------------------


async def test_a_service_account_is_a_user_that_cannot_log_in(
    client: AsyncClient, anonymous_client: AsyncClient, session: AsyncSession
) -> None:
    response = await client.post(SERVICE_ACCOUNTS, json={"name": "Warehouse script"})

    assert response.status_code == 201, response.text
    account = response.json()
    assert response.headers["location"] == f"{USERS}/{account['id']}"
    assert (account["full_name"], account["is_service_account"]) == ("Warehouse script", True)
    stored_user = await stored(session, User, account["id"])
    assert stored_user is not None
    for password in (stored_user.hashed_password, TEST_PASSWORD):
        assert_problem(await login(anonymous_client, account["email"], password), 401)
    listed = await walk_pages(client, USERS, {"is_service_account": "true"})
    assert [user["id"] for user in listed] == [account["id"]]


async def test_creating_a_service_account_needs_users_create(
    session: AsyncSession, sign_in: SignIn
) -> None:
    reader = await sign_in(await user_with_grants(session, {"users": []}))

    response = await reader.post(SERVICE_ACCOUNTS, json={"name": "Nope"})

    assert_problem(response, 403)


# --- minting a key --------------------------------------------------------------------------


async def test_a_key_is_shown_once_and_only_its_hash_is_stored(
    client: AsyncClient, session: AsyncSession
) -> None:
    account = await new_service_account(client)

    response = await client.post(
        API_KEYS,
        json={"service_account_id": account["id"], "name": "sync", "permissions": ["tasks:create"]},
    )

    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    key = created.pop("api_key")
    assert API_KEY_PATTERN.fullmatch(key)
    assert key.startswith(created["key_prefix"] + "_")
    assert created["permissions"] == ["tasks:create", "tasks:read"]  # read implied
    assert created["service_account_id"] == account["id"]
    assert response.headers["location"] == f"{API_KEYS}/{created['id']}"
    shown_again = (await client.get(response.headers["location"])).json()
    assert shown_again == created  # everything but the key itself
    row = await stored_key(session, created["id"])
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    secret = key.rsplit("_", 1)[1]
    assert secret not in str(row.model_dump())
    (change,) = await changes_of(session, "api_key", created["id"])
    assert change.new_values is not None
    assert change.new_values["key_hash"] == "***"
    assert secret not in str(change.new_values)


async def test_nobody_mints_a_key_stronger_than_themselves(
    session: AsyncSession, sign_in: SignIn, client: AsyncClient
) -> None:
    account = await new_service_account(client)
    admin = await sign_in(await user_with_grants(session, {"users": ["update"], "products": []}))
    payload = {"service_account_id": account["id"], "name": "k"}

    stronger = await admin.post(API_KEYS, json=payload | {"permissions": ["products:update"]})
    as_strong = await admin.post(API_KEYS, json=payload | {"permissions": ["products:read"]})
    by_superuser = await client.post(API_KEYS, json=payload | {"permissions": ["products:update"]})

    problem = assert_problem(stronger, 403)
    assert "products:update" in problem["detail"]
    assert as_strong.status_code == 201, as_strong.text
    assert by_superuser.status_code == 201, by_superuser.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"permissions": ["products:fly"]}, "body.permissions.0"),
        ({"permissions": ["nothing"]}, "body.permissions.0"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "body.expires_at"),
        ({"expires_at": "2999-01-01T00:00:00"}, "body.expires_at"),  # no time zone
        ({"name": "  "}, "body.name"),
        ({"public_id": "0123456789abcdef"}, "body.public_id"),  # no choosing one's key
    ],
)
async def test_an_invalid_key_request_is_a_422_naming_the_field(
    client: AsyncClient, fields: dict[str, object], field: str
) -> None:
    account = await new_service_account(client)
    payload = {"service_account_id": account["id"], "name": "k", "permissions": []} | fields

    response = await client.post(API_KEYS, json=payload)

    problem = assert_problem(response, 422)
    assert field in {error["field"] for error in problem["errors"]}


async def test_a_key_is_only_for_a_service_account(client: AsyncClient, superuser: User) -> None:
    payload: dict[str, object] = {
        "service_account_id": superuser.id,
        "name": "k",
        "permissions": [],
    }

    response = await client.post(API_KEYS, json=payload)

    problem = assert_problem(response, 422)
    assert [error["field"] for error in problem["errors"]] == ["body.service_account_id"]


# --- using a key ----------------------------------------------------------------------------


async def test_a_key_acts_as_its_service_account_with_its_permissions_only(
    app: FastAPI, client: AsyncClient
) -> None:
    key = await service_key(client, ["products:read"])

    async with key_client(app, key) as machine:
        me = await machine.get(ME)
        read = await machine.get(PRODUCTS)
        write = await machine.post(PRODUCTS, json=product_payload())
        users = await machine.get(USERS)

    assert me.status_code == 200
    assert me.json()["id"] == key["service_account_id"]
    assert read.status_code == 200
    assert_problem(write, 403)
    assert_problem(users, 403)


async def test_a_key_is_never_a_superuser_whatever_its_permissions(
    app: FastAPI, client: AsyncClient, superuser: User
) -> None:
    """Even a key with every permission cannot do what only a superuser may: here, change a
    superuser's account (its user-admin permissions let it change anyone else's)."""
    every = [f"{m}:{a}" for m in ("users", "roles") for a in ("read", "create", "update", "delete")]
    key = await service_key(client, every)
    other = await new_service_account(client, "Someone else")

    async with key_client(app, key) as machine:
        renamed = await machine.patch(f"{USERS}/{other['id']}", json={"full_name": "Renamed"})
        on_superuser = await machine.patch(f"{USERS}/{superuser.id}", json={"full_name": "Pwned"})

    assert renamed.status_code == 200, renamed.text
    problem = assert_problem(on_superuser, 403)
    assert "superuser" in problem["detail"]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # the secret of another key
        lambda key: key[:6] + "f" * 16 + key[22:],  # another key's public id
        lambda key: key[:-1],  # malformed
        lambda _key: "bo_sk_",
    ],
    ids=["wrong-secret", "unknown-id", "truncated", "prefix-only"],
)
async def test_a_wrong_key_is_refused_like_a_bad_token(
    app: FastAPI, client: AsyncClient, tamper: Callable[[str], str]
) -> None:
    key = await service_key(client, ["products:read"])

    async with api_client(app, tamper(key["api_key"])) as machine:
        response = await machine.get(PRODUCTS)

    assert_problem(response, 401, "invalid-token")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_revoked_key_is_refused_from_the_next_request_on(
    app: FastAPI, client: AsyncClient, session: AsyncSession
) -> None:
    key = await service_key(client, ["products:read"])
    async with key_client(app, key) as machine:
        assert (await machine.get(PRODUCTS)).status_code == 200  # now in the principal cache

        revoked = await client.delete(f"{API_KEYS}/{key['id']}")
        after = await machine.get(PRODUCTS)

    assert revoked.status_code == 204
    assert_problem(after, 401, "invalid-token")
    shown = (await client.get(f"{API_KEYS}/{key['id']}")).json()
    assert shown["revoked_at"] is not None
    assert (await client.delete(f"{API_KEYS}/{key['id']}")).status_code == 204  # idempotent
    assert (await stored_key(session, key["id"])).revoked_at is not None


async def test_revoking_a_key_needs_holding_what_it_can_do(
    client: AsyncClient, session: AsyncSession, sign_in: SignIn
) -> None:
    key = await service_key(client, ["products:delete"])
    admin = await sign_in(await user_with_grants(session, {"users": ["update"]}))

    response = await admin.delete(f"{API_KEYS}/{key['id']}")

    assert_problem(response, 403)


async def test_an_expired_key_is_refused(
    app: FastAPI, client: AsyncClient, session: AsyncSession
) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    account = await new_service_account(client)
    key = await new_api_key(client, account["id"], ["products:read"], expires_at=soon.isoformat())
    assert datetime.fromisoformat(key["expires_at"]) == soon
    async with key_client(app, key) as machine:
        assert (await machine.get(PRODUCTS)).status_code == 200
        # Time passes: the same as setting the expiry in the past, behind the app's back.
        await session.execute(
            update(ApiKey)
            .where(col(ApiKey.id) == key["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()

        assert_problem(await machine.get(PRODUCTS), 401, "invalid-token")


async def test_deactivating_the_service_account_stops_its_keys(
    app: FastAPI, client: AsyncClient
) -> None:
    key = await service_key(client, ["products:read"])
    async with key_client(app, key) as machine:
        assert (await machine.get(PRODUCTS)).status_code == 200

        deactivated = await client.patch(
            f"{USERS}/{key['service_account_id']}", json={"is_active": False}
        )

        assert deactivated.status_code == 200, deactivated.text
        assert_problem(await machine.get(PRODUCTS), 401)


async def test_a_key_has_no_session_to_end_and_no_password_to_change(
    app: FastAPI, client: AsyncClient
) -> None:
    key = await service_key(client, [])

    async with key_client(app, key) as machine:
        logout = await machine.delete(LOGOUT)
        password = await machine.put(
            f"{ME}/password",
            json={"current_password": "anything at all", "new_password": "a new long passphrase"},
        )

    assert_problem(logout, 403)
    assert_problem(password, 403)


# --- the audit trail names the key ----------------------------------------------------------


async def test_what_a_key_does_is_audited_under_its_account_and_the_key(
    app: FastAPI, client: AsyncClient, session: AsyncSession, writer: AccessLogWriter
) -> None:
    key = await service_key(client, ["products:create"])

    async with key_client(app, key) as machine:
        created = await machine.post(PRODUCTS, json=product_payload())
    await writer.flush()

    assert created.status_code == 201, created.text
    (change,) = await changes_of(session, "product", created.json()["id"])
    assert (change.actor_user_id, change.api_key_id) == (key["service_account_id"], key["id"])
    assert change.request_id == created.headers["x-request-id"]
    result = await session.execute(
        select(AccessLog).where(col(AccessLog.request_id) == created.headers["x-request-id"])
    )
    access = result.scalars().one()
    assert (access.user_id, access.api_key_id) == (key["service_account_id"], key["id"])
    # A password login's requests name no key.
    (mint,) = await changes_of(session, "api_key", key["id"])
    assert mint.actor_user_id is not None
    assert mint.api_key_id is None


# --- rate limit -----------------------------------------------------------------------------


async def test_each_key_is_rate_limited_on_its_own(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    install_api_keys(app, settings.model_copy(update={"api_key_rate_limit": "3/minute"}))
    first = await service_key(client, ["products:read"])
    second = await service_key(client, ["products:read"])

    async with key_client(app, first) as one, key_client(app, second) as other:
        answers = [(await one.get(PRODUCTS)).status_code for _ in range(3)]
        limited = await one.get(PRODUCTS)
        others = await other.get(PRODUCTS)

    assert answers == [200, 200, 200]
    assert_problem(limited, 429, "rate-limited")
    assert limited.headers["ratelimit-limit"] == "3"
    assert limited.headers["ratelimit-remaining"] == "0"
    assert int(limited.headers["retry-after"]) > 0
    assert others.status_code == 200
    assert (await client.get(PRODUCTS)).status_code == 200  # tokens are not counted here


# --- last use -------------------------------------------------------------------------------


async def test_last_used_at_moves_without_a_write_per_request(
    app: FastAPI,
    client: AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    statements: list[str],
) -> None:
    key = await service_key(client, ["products:read"])
    assert key["last_used_at"] is None
    before = await stored_key(session, key["id"])
    statements.clear()

    async with key_client(app, key) as machine:
        for _ in range(100):
            assert (await machine.get(PRODUCTS)).status_code == 200
    writes_meanwhile = [sql for sql in statements if re.search(r"UPDATE api_keys", sql)]
    usage: ApiKeyUsage = app.state.api_key_usage
    assert await usage.flush(sessionmaker) == 1
    assert await usage.flush(sessionmaker) == 0  # nothing new since

    assert writes_meanwhile == []
    assert len([sql for sql in statements if re.search(r"UPDATE api_keys", sql)]) == 1
    shown = (await client.get(f"{API_KEYS}/{key['id']}")).json()
    assert shown["last_used_at"] is not None
    assert datetime.fromisoformat(shown["last_used_at"]) > datetime.fromisoformat(key["created_at"])
    # Bookkeeping, not an edit: no new version (ETag), no data-change row.
    assert shown["version"] == before.version
    assert len(await changes_of(session, "api_key", key["id"])) == 1  # the creation only


async def test_a_flush_keeps_a_later_use_recorded_elsewhere(
    client: AsyncClient, session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await service_key(client, [])
    later = datetime.now(UTC) + timedelta(minutes=5)
    await session.execute(
        text("UPDATE api_keys SET last_used_at = :t WHERE id = :id"), {"t": later, "id": key["id"]}
    )
    await session.commit()
    usage = ApiKeyUsage()
    usage.touch(key["id"])

    await usage.flush(sessionmaker)

    assert (await stored_key(session, key["id"])).last_used_at == later


# --- listing --------------------------------------------------------------------------------


async def test_keys_are_listed_in_pages_and_filtered(client: AsyncClient) -> None:
    account = await new_service_account(client)
    other = await new_service_account(client, "Other")
    keys = [await new_api_key(client, account["id"], []) for _ in range(3)]
    await new_api_key(client, other["id"], [])
    assert (await client.delete(f"{API_KEYS}/{keys[0]['id']}")).status_code == 204

    mine = await walk_pages(client, API_KEYS, {"service_account_id": account["id"], "limit": 2})
    live = await walk_pages(
        client, API_KEYS, {"service_account_id": account["id"], "revoked": "false"}
    )
    newest_first = await walk_pages(client, API_KEYS, {"sort": "-created_at"})

    assert [key["id"] for key in mine] == [key["id"] for key in keys]
    assert [key["id"] for key in live] == [key["id"] for key in keys[1:]]
    assert "api_key" not in str(mine)
    assert [key["id"] for key in newest_first] == sorted(
        (key["id"] for key in newest_first), reverse=True
    )


async def test_a_missing_key_is_a_404(client: AsyncClient) -> None:
    assert_problem(await client.get(f"{API_KEYS}/987654"), 404)
    assert_problem(await client.delete(f"{API_KEYS}/987654"), 404)


# --- keys never reach a log line ------------------------------------------------------------


def test_log_redaction_masks_a_key_under_the_names_it_travels_by() -> None:
    key, _ = new_api_key_value()
    event = {"api_key": key, "headers": {"Authorization": f"Bearer {key}"}, "event": "x"}

    assert key not in str(redact_secrets(None, "info", event))


@pytest.mark.parametrize("environment", [Environment.PRODUCTION, Environment.DEVELOPMENT])
async def test_no_key_reaches_the_logs_when_minted_refused_or_crashing(
    app: FastAPI,
    client: AsyncClient,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    environment: Environment,
) -> None:
    configure_logging(settings.model_copy(update={"environment": environment}))
    structlog.configure(cache_logger_on_first_use=False)
    capsys.readouterr()

    key = await service_key(client, ["products:read"])
    secret = key["api_key"].rsplit("_", 1)[1]
    wrong = key["api_key"][:-1] + ("A" if key["api_key"][-1] != "A" else "B")
    async with api_client(app, wrong) as refused:
        assert (await refused.get(PRODUCTS)).status_code == 401

    async def crash(*_args: object, **_kwargs: object) -> None:
        raise ConnectionResetError("connection to the database was lost")

    monkeypatch.setattr(ApiKeyRepository, "load_principal", crash)
    async with key_client(app, key) as machine:
        assert (await machine.get(PRODUCTS)).status_code == 500

    logged = capsys.readouterr().err
    assert "auth.api_key_rejected" in logged  # the refusal is logged...
    assert "ConnectionResetError" in logged  # ...and the crash, with its traceback...
    assert secret not in logged  # ...but never the key
    assert wrong.rsplit("_", 1)[1] not in logged
