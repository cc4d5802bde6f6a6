import json
from collections.abc import AsyncIterator
from ipaddress import ip_network

import pytest
import structlog
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.audit.models import DataChange
from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.core.database import Database
from backoffice.core.main import create_app
from tests.support.http import assert_problem
from tests.support.users import tokens_for


async def test_unknown_route_returns_404_problem(client: AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here")

    problem = assert_problem(response, 404)
    assert problem["type"] == "urn:backoffice:problem:not-found"


async def test_wrong_method_returns_405_problem_with_allow_header(client: AsyncClient) -> None:
    response = await client.put("/api/v1/products")

    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/v1/products/1", {"GET", "PATCH", "DELETE"}),
        ("/api/v1/products", {"GET", "POST"}),
        ("/api/v1/users/me", {"GET", "PATCH"}),
    ],
)
async def test_405_allow_lists_every_method_of_the_resource(
    client: AsyncClient, path: str, methods: set[str]
) -> None:
    response = await client.request("OPTIONS", path)

    problem = assert_problem(response, 405)
    assert problem["type"] == "urn:backoffice:problem:method-not-allowed"
    assert {method.strip() for method in response.headers["allow"].split(",")} == methods


async def test_a_body_that_cannot_be_parsed_is_a_400_problem_of_ours(client: AsyncClient) -> None:
    response = await client.post(
        "/api/v1/products",
        content=b"\xff\xfe{",
        headers={"content-type": "application/json"},
    )

    problem = assert_problem(response, response.status_code)
    assert response.status_code in {400, 422}
    assert problem["type"].startswith("urn:backoffice:problem:")


async def test_unhandled_error_returns_500_that_leaks_nothing_and_is_logged(
    app: FastAPI, client: AsyncClient
) -> None:
    async def explode() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    app.add_api_route("/boom", explode)

    with structlog.testing.capture_logs() as logs:
        response = await client.get("/boom")

    problem = assert_problem(response, 500)
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    [entry] = [log for log in logs if log["event"] == "request.unhandled_error"]
    assert entry["log_level"] == "error"
    assert entry["exc_info"] is True


async def test_a_500_is_the_end_of_the_error_not_raised_again_for_the_server_to_log(
    app: FastAPI, settings: Settings, superuser: User, session: AsyncSession
) -> None:
    """Starlette's last resort answers a bug and then raises it again, and the server logs it a
    second time, in plain text. The app's own answer ends it: the transport sees no error."""

    async def explode() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", explode)
    pair = await tokens_for(session, settings, superuser)
    transport = ASGITransport(app=app, raise_app_exceptions=True)
    async with AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {pair.access_token}"},
    ) as strict_client:
        response = await strict_client.get("/boom")

    problem = assert_problem(response, 500)
    assert problem["type"] == "urn:backoffice:problem:internal-server-error"


def test_database_errors_keep_their_parameters_out_of_messages(settings: Settings) -> None:
    database = Database.connect("postgresql://nobody@localhost/none", settings)

    assert database.engine.sync_engine.hide_parameters


async def test_request_id_is_generated_when_absent(client: AsyncClient) -> None:
    response = await client.get("/health/live")

    assert len(response.headers["x-request-id"]) == 32


@pytest.fixture
async def proxied_client(settings: Settings) -> AsyncIterator[AsyncClient]:
    """A client whose address (the ASGI test client's 127.0.0.1) is a trusted proxy."""
    trusted = settings.model_copy(update={"trusted_proxies": [ip_network("127.0.0.1/32")]})
    transport = ASGITransport(app=create_app(trusted))
    async with AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_request_id_from_a_trusted_proxy_is_kept(proxied_client: AsyncClient) -> None:
    response = await proxied_client.get("/health/live", headers={"X-Request-ID": "abc-123.def:9"})

    assert response.headers["x-request-id"] == "abc-123.def:9"


async def test_request_id_from_a_client_is_replaced(client: AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "abc-123.def:9"})

    assert response.headers["x-request-id"] != "abc-123.def:9"
    assert len(response.headers["x-request-id"]) == 32


async def test_a_caller_cannot_give_its_audit_rows_another_requests_id(
    client: AsyncClient, session: AsyncSession
) -> None:
    victim = await client.get("/api/v1/users/me")
    victim_id = victim.headers["x-request-id"]

    response = await client.post(
        "/api/v1/products",
        json={"sku": "RID-1", "name": "Borrowed id", "price": "1.00"},
        headers={"X-Request-ID": victim_id},
    )

    assert response.status_code == 201
    own_id = response.headers["x-request-id"]
    assert own_id != victim_id
    recorded = await session.scalars(
        select(col(DataChange.request_id)).where(col(DataChange.entity_type) == "product")
    )
    assert set(recorded) == {own_id}


async def test_two_request_ids_even_from_a_trusted_proxy_are_replaced(
    proxied_client: AsyncClient,
) -> None:
    response = await proxied_client.get(
        "/health/live", headers=[("X-Request-ID", "forged-1"), ("X-Request-ID", "proxy-1")]
    )

    assert response.headers["x-request-id"] not in {"forged-1", "proxy-1"}


@pytest.mark.parametrize("hostile", ["a b", "x" * 200, "line\\nbreak", "<script>", ""])
async def test_malformed_request_id_from_a_trusted_proxy_is_replaced(
    proxied_client: AsyncClient, hostile: str
) -> None:
    response = await proxied_client.get("/health/live", headers={"X-Request-ID": hostile})

    assert response.headers["x-request-id"] != hostile
    assert len(response.headers["x-request-id"]) == 32


async def test_request_id_is_bound_to_log_lines_of_the_request(client: AsyncClient) -> None:
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        response = await client.post(
            "/api/v1/products",
            json={"sku": "LOG-1", "name": "Logged", "price": "1.00"},
        )

    [entry] = [log for log in logs if log["event"] == "product.created"]
    assert entry["request_id"] == response.headers["x-request-id"]


async def test_openapi_documents_problem_responses(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()

    responses = document["paths"]["/api/v1/products/{product_id}"]["patch"]["responses"]
    assert {"404", "409", "412", "422"} <= set(responses)
    assert "Problem" in json.dumps(responses["412"])
