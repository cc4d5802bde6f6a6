"""Values a column cannot hold are a problem answer, never a 500: the database's data-exception
class (SQLSTATE 22) is mapped to a 422 by one handler, whatever route lets such a value through."""

import pytest
import structlog
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text

from backoffice.core.database import SessionDep
from tests.support.http import assert_problem


@pytest.mark.parametrize(
    ("statement", "sqlstate"),
    [
        ("SELECT CAST(2147483647 AS integer) + 1", "22003"),  # numeric out of range
        ("SELECT make_date(2024, 13, 1)", "22008"),  # datetime field overflow
        ("SELECT convert_from('\\x00'::bytea, 'UTF8')", "22021"),  # invalid byte sequence
    ],
)
async def test_a_data_exception_raised_by_any_route_is_a_422_problem(
    app: FastAPI, client: AsyncClient, statement: str, sqlstate: str
) -> None:
    async def run(session: SessionDep) -> None:
        await session.execute(text(statement))

    app.add_api_route("/data-error", run)

    with structlog.testing.capture_logs() as logs:
        response = await client.get("/data-error")

    assert_problem(response, 422, "invalid-input")
    [entry] = [line for line in logs if line["event"] == "request.data_exception"]
    assert entry["sqlstate"] == sqlstate
    assert "exc_info" not in entry  # no traceback, so no locals and no statement parameters


async def test_a_value_the_driver_cannot_send_is_a_422_problem(
    app: FastAPI, client: AsyncClient
) -> None:
    async def run(session: SessionDep) -> None:
        await session.execute(text("SELECT CAST(:value AS text)"), {"value": "a\ud800"})

    app.add_api_route("/driver-error", run)

    response = await client.get("/driver-error")

    assert_problem(response, 422, "invalid-input")


@pytest.mark.parametrize("url", ["/api/v1/audit/access-logs", "/api/v1/audit/data-changes"])
@pytest.mark.parametrize(
    "params",
    [
        {"since": "0001-01-01T00:00:00+05:00"},  # year 0 in UTC
        {"until": "9999-12-31T23:59:59-05:00"},  # year 10000 in UTC
    ],
)
async def test_a_timestamp_filter_out_of_the_driver_range_is_a_422(
    client: AsyncClient, url: str, params: dict[str, str]
) -> None:
    """A valid datetime that the driver cannot convert to UTC."""
    response = await client.get(url, params=params)

    assert_problem(response, 422, "invalid-input")


async def test_other_database_errors_stay_a_500_that_leaks_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    async def run(session: SessionDep) -> None:
        await session.execute(text("SELECT * FROM no_such_table_here"))

    app.add_api_route("/other-error", run)

    response = await client.get("/other-error")

    problem = assert_problem(response, 500)
    assert "no_such_table_here" not in response.text
    assert problem["type"] == "urn:backoffice:problem:internal-server-error"
