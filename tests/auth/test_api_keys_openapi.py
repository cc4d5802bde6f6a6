"""The OpenAPI document offers an API key next to the password login, on every authenticated
operation (generated, not per route), so Swagger UI's Authorize dialog takes either."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from backoffice.core.config import Settings
from backoffice.core.main import create_app
from backoffice.core.openapi import offer_alternative_schemes
from tests.support.api_keys import service_key
from tests.support.factories import PRODUCTS
from tests.support.http import api_client

PASSWORD_LOGIN: dict[str, list[str]] = {"OAuth2PasswordBearer": []}
API_KEY: dict[str, list[str]] = {"ApiKey": []}
PUBLIC = {("post", "/api/v1/auth/sessions"), ("post", "/api/v1/auth/tokens")}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app: FastAPI = create_app(Settings(_env_file=None))
    return app.openapi()


def test_the_api_key_is_an_http_bearer_scheme_beside_the_password_flow(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"OAuth2PasswordBearer", "ApiKey"}
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == (
        "/api/v1/auth/sessions"
    )
    assert {k: v for k, v in schemes["ApiKey"].items() if k != "description"} == {
        "type": "http",
        "scheme": "bearer",
    }


def test_every_authenticated_operation_accepts_either_and_public_ones_neither(
    document: dict[str, Any],
) -> None:
    seen = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not path.startswith("/api/v1") or (method, path) in PUBLIC:
                assert "security" not in operation, f"{method} {path}"
            else:
                seen += 1
                assert operation.get("security") == [PASSWORD_LOGIN, API_KEY], f"{method} {path}"
    assert seen >= 30


def test_offering_the_alternative_is_idempotent(document: dict[str, Any]) -> None:
    again = offer_alternative_schemes(document, {"ApiKey": {"type": "http", "scheme": "bearer"}})

    assert again["paths"]["/api/v1/products"]["get"]["security"] == [PASSWORD_LOGIN, API_KEY]


async def test_what_the_document_offers_works(app: FastAPI, client: AsyncClient) -> None:
    """The scheme as documented: the key, as a bearer token, reaches a secured operation."""
    scheme = (await client.get("/openapi.json")).json()["components"]["securitySchemes"]["ApiKey"]
    key = await service_key(client, ["products:read"])
    header = {"Authorization": f"{scheme['scheme'].capitalize()} {key['api_key']}"}

    async with api_client(app) as anonymous:
        assert (await anonymous.get(PRODUCTS)).status_code == 401
        assert (await anonymous.get(PRODUCTS, headers=header)).status_code == 200
