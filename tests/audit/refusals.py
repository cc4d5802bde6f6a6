"""What the database refuses, and with which SQLSTATE: the audit tables' guards under test."""

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

INSUFFICIENT_PRIVILEGE = "42501"


async def refusal(connection: AsyncConnection, statement: str) -> str | None:
    """The SQLSTATE the statement was refused with; None if it ran. Undone either way."""
    try:
        async with connection.begin_nested() as savepoint:
            await connection.execute(text(statement))
            await savepoint.rollback()
    except DBAPIError as exc:
        sqlstate: str = exc.orig.sqlstate  # type: ignore[union-attr]  # asyncpg's error has it
        return sqlstate
    return None
