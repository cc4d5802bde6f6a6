"""Service accounts and API keys made through the API, as an administrator would."""

from typing import Any

from httpx import AsyncClient

SERVICE_ACCOUNTS = "/api/v1/service-accounts"
API_KEYS = "/api/v1/api-keys"


async def new_service_account(admin: AsyncClient, name: str = "Shop front") -> dict[str, Any]:
    response = await admin.post(SERVICE_ACCOUNTS, json={"name": name})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def new_api_key(
    admin: AsyncClient,
    service_account_id: int,
    permissions: list[str],
    **fields: Any,
) -> dict[str, Any]:
    """A key minted by `admin` (its body, with the key in `api_key`)."""
    payload = {"service_account_id": service_account_id, "name": "integration"} | fields
    response = await admin.post(API_KEYS, json=payload | {"permissions": permissions})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def service_key(admin: AsyncClient, permissions: list[str]) -> dict[str, Any]:
    """A new service account's key with these permissions."""
    account = await new_service_account(admin)
    return await new_api_key(admin, account["id"], permissions)
