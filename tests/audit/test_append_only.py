"""The audit tables are append-only for real.

The application's database role (backoffice_app, which the test connection runs as) may read
and append to them, nothing more: no UPDATE, DELETE or TRUNCATE, even with the retention job's
setting on, and no way to alter, disable or drop their triggers. The owner (migrations, the
archive job) is held back by the trigger too, except DELETE and TRUNCATE in a transaction of the
retention job. Which tables are audit tables is read from the catalog (every table the
append-only trigger guards), so a new one is covered without anyone listing it here.
"""

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from backoffice.audit.models import APPEND_ONLY_TABLES, RETENTION_SETTING, AuditArchiveBatch
from tests.audit.refusals import INSUFFICIENT_PRIVILEGE, refusal
from tests.support.database import owner_rights

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


async def _audit_tables(connection: AsyncConnection) -> list[str]:
    """Every table the append-only trigger function guards, from the catalog; its partitions
    are tested on their own (test_partitions.py)."""
    names = await connection.scalars(
        text("""
            SELECT DISTINCT rel.relname FROM pg_trigger trg
            JOIN pg_class rel ON rel.oid = trg.tgrelid
            JOIN pg_proc proc ON proc.oid = trg.tgfoid
            WHERE proc.proname = 'audit_append_only'
              AND rel.relnamespace = 'public'::regnamespace AND NOT rel.relispartition
            ORDER BY 1""")
    )
    return list(names)


async def _business_tables(connection: AsyncConnection) -> list[str]:
    """Every other table of the schema but the archive's bookkeeping (the archive job's), and
    the audit tables' partitions."""
    names = await connection.scalars(
        text("""
            SELECT tablename FROM pg_tables JOIN pg_class rel ON rel.relname = tablename
              AND rel.relnamespace = 'public'::regnamespace
            WHERE schemaname = 'public' AND NOT rel.relispartition ORDER BY 1""")
    )
    excluded = {*await _audit_tables(connection), AuditArchiveBatch.__tablename__}
    return [name for name in names if name not in excluded]


@pytest.fixture(params=sorted(_ROWS))
async def table(request: pytest.FixtureRequest, connection: AsyncConnection) -> str:
    """An audit table holding one row, appended by the app's role."""
    name: str = request.param
    await connection.execute(text(_ROWS[name]), {"now": datetime.now(UTC)})
    return name


async def test_the_catalog_and_the_models_agree_on_the_audit_tables(
    connection: AsyncConnection,
) -> None:
    assert await _audit_tables(connection) == sorted(APPEND_ONLY_TABLES)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET id = id",
        "DELETE FROM {table}",
        "TRUNCATE {table}",
        "ALTER TABLE {table} DISABLE TRIGGER ALL",
        "ALTER TABLE {table} DISABLE TRIGGER {table}_append_only",
        "DROP TRIGGER {table}_append_only ON {table}",
        "DROP TRIGGER {table}_no_truncate ON {table}",
        "ALTER TABLE {table} OWNER TO CURRENT_USER",
        "DROP TABLE {table}",
    ],
)
async def test_the_app_role_cannot_rewrite_an_audit_table_even_as_the_retention_job(
    connection: AsyncConnection, statement: str
) -> None:
    await connection.execute(text(f"SET LOCAL {RETENTION_SETTING} = 'on'"))
    tables = await _audit_tables(connection)

    refusals = {table: await refusal(connection, statement.format(table=table)) for table in tables}

    assert tables
    assert refusals == dict.fromkeys(tables, INSUFFICIENT_PRIVILEGE)


@pytest.mark.parametrize(
    "statement",
    [
        # The trigger function: replacing its body would let every statement through.
        "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN OLD; END $$",
        "ALTER FUNCTION audit_append_only() OWNER TO CURRENT_USER",
        "DROP FUNCTION audit_append_only() CASCADE",
        # No CREATE on the schema: no objects of its own to shadow ours with.
        "CREATE TABLE public.shadow (id int)",
        "CREATE FUNCTION public.shadow() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ],
)
async def test_the_app_role_cannot_replace_the_trigger_function_nor_create_objects(
    connection: AsyncConnection, statement: str
) -> None:
    assert await refusal(connection, statement) == INSUFFICIENT_PRIVILEGE


async def test_the_app_role_is_neither_a_superuser_nor_the_owner(
    connection: AsyncConnection,
) -> None:
    owns = await connection.scalars(
        text("""
            SELECT relname FROM pg_class
            WHERE relnamespace = 'public'::regnamespace AND pg_has_role(relowner, 'MEMBER')""")
    )

    assert (
        await connection.scalar(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
        is False
    )
    assert list(owns) == []


async def test_the_app_role_appends_to_and_reads_the_audit_tables(
    connection: AsyncConnection, table: str
) -> None:
    assert await connection.scalar(text(f"SELECT count(*) FROM {table}")) == 1  # noqa: S608  # fixed names


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM {table}",
        "INSERT INTO {table} SELECT * FROM {table} WHERE false",
        "UPDATE {table} SET {column} = {column} WHERE false",
        "DELETE FROM {table} WHERE false",
    ],
)
async def test_the_app_role_reads_and_writes_every_business_table(
    connection: AsyncConnection, statement: str
) -> None:
    """Privileges are checked before any row is read, so `WHERE false` proves the right."""
    tables = await _business_tables(connection)
    refusals = {}
    for name in tables:
        column = await connection.scalar(
            text(
                "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:table AS regclass) "
                "AND attnum = 1"
            ),
            {"table": name},
        )
        sql = statement.format(table=name, column=column)
        refusals[name] = await refusal(connection, sql)

    assert len(tables) >= 9  # products, customers, tasks, users, roles, ...
    assert refusals == dict.fromkeys(tables)


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT * FROM {table}", None),
        ("INSERT INTO {table} SELECT * FROM {table} WHERE false", INSUFFICIENT_PRIVILEGE),
        ("UPDATE {table} SET id = id WHERE false", INSUFFICIENT_PRIVILEGE),
        ("DELETE FROM {table} WHERE false", INSUFFICIENT_PRIVILEGE),
    ],
)
async def test_the_app_role_only_reads_the_archive_bookkeeping(
    connection: AsyncConnection, statement: str, expected: str | None
) -> None:
    sql = statement.format(table=AuditArchiveBatch.__tablename__)

    assert await refusal(connection, sql) == expected


@pytest.mark.parametrize(
    "statement", ["UPDATE {table} SET {column}", "DELETE FROM {table}", "TRUNCATE {table}"]
)
async def test_not_even_the_owner_may_change_audit_rows_outside_the_retention_job(
    connection: AsyncConnection, table: str, statement: str
) -> None:
    sql = text(statement.format(table=table, column=_COLUMN[table]))

    async with owner_rights(connection), connection.begin_nested() as savepoint:
        with pytest.raises(DBAPIError, match="append-only"):
            await connection.execute(sql)
        await savepoint.rollback()

    assert await connection.scalar(text(f"SELECT count(*) FROM {table}")) == 1  # noqa: S608


@pytest.mark.parametrize("statement", ["DELETE FROM {table}", "TRUNCATE {table}"])
async def test_the_retention_job_as_the_owner_may_remove_audit_rows(
    connection: AsyncConnection, table: str, statement: str
) -> None:
    async with owner_rights(connection), connection.begin_nested():
        await connection.execute(text(f"SET LOCAL {RETENTION_SETTING} = 'on'"))
        await connection.execute(text(statement.format(table=table)))

    assert await connection.scalar(text(f"SELECT count(*) FROM {table}")) == 0  # noqa: S608


async def test_not_even_the_retention_job_may_rewrite_audit_rows(
    connection: AsyncConnection, table: str
) -> None:
    update = text(f"UPDATE {table} SET {_COLUMN[table]}")  # noqa: S608  # fixed names
    async with owner_rights(connection), connection.begin_nested() as savepoint:
        await connection.execute(text(f"SET LOCAL {RETENTION_SETTING} = 'on'"))
        with pytest.raises(DBAPIError, match="append-only"):
            await connection.execute(update)
        await savepoint.rollback()
