"""What a production server shows anyone who asks: no documentation of its attack surface
unless switched on, and no metrics without the scrape token."""

import secrets
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import SecretStr

from backoffice.core.config import Environment, Settings
from backoffice.core.main import create_app
from tests.support.http import api_client, assert_problem

DOCUMENTATION = ["/docs", "/redoc", "/openapi.json"]
METRICS_TOKEN = secrets.token_urlsafe(32)  # made per run: no secret-looking literal in the repo


def production(settings: Settings, **overrides: object) -> Settings:
    return settings.model_copy(
        update={
            "environment": Environment.PRODUCTION,
            "metrics_token": SecretStr(METRICS_TOKEN),
            **overrides,
        }
    )


@pytest.fixture
async def production_client(settings: Settings, app: FastAPI) -> AsyncIterator[AsyncClient]:
    served = create_app(production(settings))
    served.state.database = app.state.database
    async with api_client(served) as client:
        yield client


@pytest.mark.parametrize("path", DOCUMENTATION)
async def test_production_serves_no_documentation_by_default(
    production_client: AsyncClient, path: str
) -> None:
    response = await production_client.get(path)

    assert_problem(response, 404, "not-found")


@pytest.mark.parametrize("path", DOCUMENTATION)
async def test_production_serves_documentation_when_switched_on(
    settings: Settings, app: FastAPI, path: str
) -> None:
    served = create_app(production(settings, docs_enabled=True))
    served.state.database = app.state.database
    async with api_client(served) as client:
        response = await client.get(path)

    assert response.status_code == 200


async def test_production_metrics_need_the_token(production_client: AsyncClient) -> None:
    anonymous = await production_client.get("/metrics")
    scraper = await production_client.get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )

    assert_problem(anonymous, 401)
    assert scraper.status_code == 200
