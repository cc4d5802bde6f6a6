import json

import pytest
import structlog
from fastapi import FastAPI
from httpx import AsyncClient

from tests.helpers import assert_problem


async def test_unknown_route_returns_404_problem(client: AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here")

    problem = assert_problem(response, 404)
    assert problem["type"] == "about:blank"


async def test_wrong_method_returns_405_problem_with_allow_header(client: AsyncClient) -> None:
    response = await client.put("/api/v1/products")

    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


async def test_unhandled_error_returns_500_that_leaks_nothing_and_is_logged(
    app: FastAPI, client: AsyncClient
) -> None:
    async def explode() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    app.add_api_route("/boom", explode)

    with structlog.testing.capture_logs() as logs:
        response = await client.get("/boom", headers={"X-Request-ID": "trace-500"})

    problem = assert_problem(response, 500)
    assert problem["request_id"] == "trace-500"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    [entry] = [log for log in logs if log["event"] == "request.unhandled_error"]
    assert entry["log_level"] == "error"
    assert entry["exc_info"] is True


async def test_request_id_is_generated_when_absent(client: AsyncClient) -> None:
    response = await client.get("/health/live")

    assert len(response.headers["x-request-id"]) == 32


async def test_request_id_from_client_is_echoed(client: AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "abc-123.def:9"})

    assert response.headers["x-request-id"] == "abc-123.def:9"


@pytest.mark.parametrize("hostile", ["a b", "x" * 200, "line\\nbreak", "<script>", ""])
async def test_malformed_request_id_is_replaced(client: AsyncClient, hostile: str) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": hostile})

    assert response.headers["x-request-id"] != hostile
    assert len(response.headers["x-request-id"]) == 32


async def test_request_id_is_bound_to_log_lines_of_the_request(client: AsyncClient) -> None:
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        await client.post(
            "/api/v1/products",
            json={"sku": "LOG-1", "name": "Logged", "price": "1.00"},
            headers={"X-Request-ID": "req-for-logs"},
        )

    [entry] = [log for log in logs if log["event"] == "product.created"]
    assert entry["request_id"] == "req-for-logs"


async def test_openapi_documents_problem_responses(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()

    responses = document["paths"]["/api/v1/products/{product_id}"]["patch"]["responses"]
    assert {"404", "409", "412", "422"} <= set(responses)
    assert "Problem" in json.dumps(responses["412"])
