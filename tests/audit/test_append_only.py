"""The audit tables are append-only for the application: the database itself refuses UPDATE,
DELETE and TRUNCATE, except DELETE and TRUNCATE in a transaction of the retention job."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from backoffice.audit.models import RETENTION_SETTING

_ROWS = {
    "access_logs": (
        "INSERT INTO access_logs (occurred_at, request_id, method, path, status, duration_ms) "
        "VALUES (:now, 'r-1', 'GET', '/x', 200, 1.0)"
    ),
    "data_changes": (
        "INSERT INTO data_changes (entity_type, entity_id, action, new_values) "
        "VALUES ('product', '1', 'insert', '{}')"
    ),
}
_COLUMN = {"access_logs": "status = 500", "data_changes": "entity_id = '2'"}


@pytest.fixture(params=sorted(_ROWS))
async def table(request: pytest.FixtureRequest, connection: AsyncConnection) -> str:
    name: str = request.param
    await connection.execute(text(_ROWS[name]), {"now": datetime.now(UTC)})
    return name


@pytest.mark.parametrize(
    "statement",
    ["UPDATE {table} SET {column}", "DELETE FROM {table}", "TRUNCATE {table}"],
)
async def test_the_application_cannot_change_or_remove_audit_rows(
    connection: AsyncConnection, table: str, statement: str
) -> None:
    sql = text(statement.format(table=table, column=_COLUMN[table]))

    async with connection.begin_nested() as savepoint:
        with pytest.raises(DBAPIError, match="append-only"):
            await connection.execute(sql)
        await savepoint.rollback()

    assert await connection.scalar(text(f"SELECT count(*) FROM {table}")) == 1  # noqa: S608


@pytest.mark.parametrize("statement", ["DELETE FROM {table}", "TRUNCATE {table}"])
async def test_the_retention_job_may_remove_audit_rows(
    connection: AsyncConnection, table: str, statement: str
) -> None:
    async with connection.begin_nested():
        await connection.execute(text(f"SET LOCAL {RETENTION_SETTING} = 'on'"))
        await connection.execute(text(statement.format(table=table)))

    assert await connection.scalar(text(f"SELECT count(*) FROM {table}")) == 0  # noqa: S608


async def test_not_even_the_retention_job_may_rewrite_audit_rows(
    connection: AsyncConnection, table: str
) -> None:
    update = text(f"UPDATE {table} SET {_COLUMN[table]}")  # noqa: S608  # fixed names
    async with connection.begin_nested() as savepoint:
        await connection.execute(text(f"SET LOCAL {RETENTION_SETTING} = 'on'"))
        with pytest.raises(DBAPIError, match="append-only"):
            await connection.execute(update)
        await savepoint.rollback()
