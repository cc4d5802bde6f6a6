"""Review findings on service accounts and API keys: the rules that guard a key must also
guard the account that carries it, and the key's secret is stored nowhere in the clear."""

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from tests.support.api_keys import API_KEYS, new_api_key, new_service_account, service_key
from tests.support.factories import PRODUCTS, USERS
from tests.support.http import api_client, assert_problem
from tests.support.users import SignIn, user_with_grants


async def test_a_weaker_admin_cannot_disarm_a_key_by_deactivating_its_account(
    app: FastAPI, client: AsyncClient, session: AsyncSession, sign_in: SignIn
) -> None:
    key = await service_key(client, ["products:delete"])
    weak_admin = await sign_in(await user_with_grants(session, {"users": ["update", "delete"]}))
    account = f"{USERS}/{key['service_account_id']}"

    revoked = await weak_admin.delete(f"{API_KEYS}/{key['id']}")
    deactivated = await weak_admin.patch(account, json={"is_active": False})
    deleted = await weak_admin.delete(account)

    assert_problem(revoked, 403)  # the documented rule...
    assert_problem(deactivated, 403)  # ...must not be bypassed through the account
    assert_problem(deleted, 403)
    async with api_client(app, str(key["api_key"])) as machine:
        assert (await machine.get(PRODUCTS)).status_code == 200


async def test_a_key_minted_with_an_idempotency_key_is_not_stored_in_the_clear(
    client: AsyncClient, connection: AsyncConnection
) -> None:
    account = await new_service_account(client)
    payload = {"service_account_id": account["id"], "name": "k", "permissions": ["tasks:read"]}
    headers = {"Idempotency-Key": "mint-1"}

    first = await client.post(API_KEYS, json=payload, headers=headers)
    replay = await client.post(API_KEYS, json=payload, headers=headers)

    assert first.status_code == 201, first.text
    secret = first.json()["api_key"].rsplit("_", 1)[1]
    bodies = await connection.scalars(
        text("SELECT convert_from(response_body, 'UTF8') FROM idempotency_keys")
    )
    assert all(secret not in (body or "") for body in bodies)  # "only a hash is stored"
    assert secret not in replay.text  # "the secret is shown once"
    # The retry is a 409 (in use while the first's lease runs, then `idempotent-answer-lost`):
    # it learns the key was minted (read it back in the list), and no second one is.
    assert_problem(replay, 409)
    keys = (await client.get(API_KEYS, params={"service_account_id": account["id"]})).json()
    assert len(keys["items"]) == 1


async def test_an_expiring_key_cannot_mint_a_key_that_outlives_it(
    app: FastAPI, client: AsyncClient
) -> None:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    account = await new_service_account(client)
    admin_key = await new_api_key(
        client, account["id"], ["users:update", "products:read"], expires_at=tomorrow.isoformat()
    )
    body = {"service_account_id": account["id"], "name": "minted", "permissions": ["products:read"]}

    async with api_client(app, str(admin_key["api_key"])) as machine:
        later = await machine.post(
            API_KEYS, json=body | {"expires_at": (tomorrow + timedelta(days=1)).isoformat()}
        )
        unset = await machine.post(API_KEYS, json=body)
        sooner = await machine.post(
            API_KEYS, json=body | {"expires_at": (tomorrow - timedelta(hours=1)).isoformat()}
        )

    assert_problem(later, 422)
    assert unset.status_code == sooner.status_code == 201, (unset.text, sooner.text)
    assert unset.json()["expires_at"] == admin_key["expires_at"]  # the minter's, when unset
