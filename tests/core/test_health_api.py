from fastapi import FastAPI
from httpx import AsyncClient

from backoffice.core.config import Settings
from backoffice.core.database import Database
from tests.support.http import assert_problem


async def test_live_returns_ok(client: AsyncClient) -> None:
    response = await client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_returns_ready_when_the_database_answers(client: AsyncClient) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_ready_returns_503_problem_when_the_database_is_down(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    # Port 9 (discard) has nothing listening: connecting fails at once.
    app.state.database = Database.connect("postgresql://nobody@127.0.0.1:9/none", settings)

    response = await client.get("/health/ready")

    problem = assert_problem(response, 503)
    assert "database" in problem["detail"]
    await app.state.database.dispose()


async def test_landing_page_links_to_the_docs(client: AsyncClient) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    assert 'href="/docs"' in response.text
    assert 'href="/redoc"' in response.text


async def test_docs_are_served_from_local_assets(client: AsyncClient) -> None:
    docs = await client.get("/docs")
    redoc = await client.get("/redoc")

    assert docs.status_code == redoc.status_code == 200
    for page in (docs.text, redoc.text):
        assert "cdn" not in page.lower()
        assert "/static-offline-docs/" in page
    asset = await client.get("/static-offline-docs/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert len(asset.content) > 100_000
