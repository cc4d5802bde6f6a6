"""The migrations are the schema: prove they match the models and that Atlas would accept them."""

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from backoffice.core.database import libpq_url
from backoffice.core.migrations import (
    OPERATOR_VERSION,
    SUM_FILE,
    MigrationError,
    apply_migrations,
    compute_sum_file,
    file_hashes,
    read_migration_files,
    split_statements,
)
from backoffice.core.models import import_all_models
from tests.support.database import scratch_database

# A relation that is a partition: made by the partition functions (audit/partitions.py), at
# times the models cannot know, and named by month. What PostgreSQL clones onto it from its
# parent (columns, indexes, constraints, row triggers) is compared on the parent; the
# partitioning itself (key, DEFAULT partition) and the functions that make partitions are
# compared as such. Hence the `NOT ... relispartition` below.
#
# Every property of the schema that drift could touch, as comparable rows.
_CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, udt_name, character_maximum_length,
               numeric_precision,
               numeric_scale, datetime_precision, is_nullable, column_default, is_identity,
               identity_generation, collation_name
        FROM information_schema.columns
        JOIN pg_class tbl ON tbl.relname = table_name
          AND tbl.relnamespace = 'public'::regnamespace
        WHERE table_schema = 'public' AND NOT tbl.relispartition""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        JOIN pg_class tbl ON tbl.relname = tablename
          AND tbl.relnamespace = 'public'::regnamespace
        WHERE schemaname = 'public' AND NOT tbl.relispartition""",
    "constraints": """
        SELECT rel.relname, con.conname, con.contype, pg_get_constraintdef(con.oid, true)
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace
        WHERE ns.nspname = 'public' AND NOT rel.relispartition""",
    "tables": """
        SELECT tablename FROM pg_tables JOIN pg_class tbl ON tbl.relname = tablename
          AND tbl.relnamespace = 'public'::regnamespace
        WHERE schemaname = 'public' AND NOT tbl.relispartition""",
    "partitioning": """
        SELECT rel.relname, pg_get_partkeydef(rel.oid), part.partdefid <> 0 AS has_default,
               coalesce(def.relname, '') AS default_partition
        FROM pg_partitioned_table part JOIN pg_class rel ON rel.oid = part.partrelid
        LEFT JOIN pg_class def ON def.oid = part.partdefid
        WHERE rel.relnamespace = 'public'::regnamespace""",
    "enums": """
        SELECT typ.typname, enum.enumlabel, enum.enumsortorder
        FROM pg_enum enum JOIN pg_type typ ON typ.oid = enum.enumtypid
        JOIN pg_namespace ns ON ns.oid = typ.typnamespace WHERE ns.nspname = 'public'""",
    "extensions": "SELECT extname FROM pg_extension",
    "triggers": """
        SELECT rel.relname, trg.tgname, pg_get_triggerdef(trg.oid)
        FROM pg_trigger trg JOIN pg_class rel ON rel.oid = trg.tgrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace
        WHERE ns.nspname = 'public' AND NOT trg.tgisinternal
          AND NOT rel.relispartition""",
    "functions": """
        SELECT proc.proname, pg_get_functiondef(proc.oid) FROM pg_proc proc
        JOIN pg_namespace ns ON ns.oid = proc.pronamespace
        WHERE ns.nspname = 'public' AND proc.prokind = 'f'
          AND NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.objid = proc.oid
                          AND dep.deptype = 'e')""",
    "sequences": """
        SELECT sequencename, data_type, increment_by FROM pg_sequences
        WHERE schemaname = 'public'""",
}


type Catalog = dict[str, set[tuple[Any, ...]]]


async def catalog(url: str) -> Catalog:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        return {
            name: {tuple(row) for row in await connection.fetch(query)}
            for name, query in _CATALOG_QUERIES.items()
        }
    finally:
        await connection.close()


def drift(migrated: Catalog, declared: Catalog) -> dict[str, tuple[set[Any], set[Any]]]:
    """What differs, by kind: (only in `migrated`, only in `declared`)."""
    return {
        kind: (migrated[kind] - declared[kind], declared[kind] - migrated[kind])
        for kind in _CATALOG_QUERIES
        if migrated[kind] != declared[kind]
    }


async def _execute(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    """A database with no schema yet, for the migrations (or the models) to build."""
    async with scratch_database(server_url, "scratch", migrations=None) as url:
        yield url


async def _create_all(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from backoffice.core.database import sqlalchemy_url

    engine = create_async_engine(sqlalchemy_url(url))
    async with engine.begin() as connection:
        await connection.run_sync(import_all_models().create_all)
    await engine.dispose()


def test_atlas_sum_matches_the_migration_files_byte_for_byte(migrations_dir: Path) -> None:
    expected = compute_sum_file(read_migration_files(migrations_dir))

    assert (migrations_dir / SUM_FILE).read_bytes() == expected.encode()


def test_sql_files_are_kept_byte_exact_by_git() -> None:
    attributes = (Path(__file__).resolve().parents[2] / ".gitattributes").read_text()

    assert "*.sql -text" in attributes.splitlines()


def test_sum_algorithm_matches_atlas_on_a_known_directory(tmp_path: Path) -> None:
    """Reference values computed independently from Atlas's algorithm (running SHA-256)."""
    (tmp_path / "1_a.sql").write_bytes(b"CREATE TABLE a (id int);\n")
    (tmp_path / "2_b.sql").write_bytes(b"-- atlas:sum ignore\nSELECT 1;\n")
    import base64
    import hashlib

    running = hashlib.sha256(b"1_a.sql" + b"CREATE TABLE a (id int);\n")
    first = base64.b64encode(running.digest()).decode()
    running.update(b"2_b.sql")  # ignored file: only its name enters the hash
    second = base64.b64encode(running.digest()).decode()

    assert file_hashes(read_migration_files(tmp_path)) == [("1_a.sql", first), ("2_b.sql", second)]
    total = hashlib.sha256(f"1_a.sql{first}2_b.sql{second}".encode()).digest()
    assert compute_sum_file(read_migration_files(tmp_path)).splitlines()[0] == (
        f"h1:{base64.b64encode(total).decode()}"
    )


async def test_migrations_produce_exactly_the_models_schema(
    database_url: str, empty_database: str
) -> None:
    """No drift either way: migrated database == metadata.create_all, object by object."""
    await _create_all(empty_database)

    migrated, declared = await catalog(database_url), await catalog(empty_database)

    assert drift(migrated, declared) == {}  # (only in migrations, only in models), by kind


async def test_the_drift_check_sees_through_partitions_but_not_past_a_real_change(
    empty_database: str,
) -> None:
    """Month partitions come and go as time passes (and as this session's tests make and drop
    them): not drift. A change to the partitioned tables themselves is."""
    await _create_all(empty_database)
    declared = await catalog(empty_database)

    await _execute(
        empty_database,
        "INSERT INTO access_logs (occurred_at, request_id, method, path, status, duration_ms) "
        "VALUES ('2301-01-01Z', 'r', 'GET', '/', 200, 1)",
        "SELECT audit_ensure_partitions(12)",
    )
    assert drift(await catalog(empty_database), declared) == {}

    await _execute(
        empty_database,
        "CREATE INDEX ix_access_logs_method ON access_logs (method)",
        "DROP TABLE data_changes_default",
        "DROP TRIGGER data_changes_no_truncate ON data_changes",
    )
    found = drift(await catalog(empty_database), declared)
    assert found.keys() == {"indexes", "partitioning", "triggers"}
    assert {row[1] for row in found["indexes"][0]} == {"ix_access_logs_method"}
    assert {row[0] for row in found["partitioning"][1]} == {"data_changes"}


async def test_applied_migrations_are_recorded_as_atlas_records_them(
    database_url: str, migrations_dir: Path
) -> None:
    files = read_migration_files(migrations_dir)
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        rows = await connection.fetch(
            "SELECT * FROM atlas_schema_revisions.atlas_schema_revisions ORDER BY version"
        )
    finally:
        await connection.close()

    hashes = dict(file_hashes(files))
    assert [row["version"] for row in rows] == [file.version for file in files]
    for row, file in zip(rows, files, strict=True):
        statements = len(split_statements(file.content.decode()))
        assert row["description"] == file.description
        assert (row["type"], row["applied"], row["total"]) == (2, statements, statements)
        assert row["hash"] == hashes[file.name]
        assert row["error"] is None
        assert row["partial_hashes"] is None
        assert row["execution_time"] > 0
        assert row["operator_version"] == OPERATOR_VERSION


async def test_applying_again_is_a_no_op(database_url: str, migrations_dir: Path) -> None:
    assert await apply_migrations(database_url, migrations_dir) == []


@pytest.fixture
def directory(migrations_dir: Path, tmp_path: Path) -> Path:
    """A copy of the project's migrations, for a test to tamper with."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir, copy)
    return copy


def edit_first_migration(directory: Path, appended: bytes) -> None:
    first = min(directory.glob("*.sql"))
    first.write_bytes(first.read_bytes() + appended)


def rehash(directory: Path) -> None:
    (directory / SUM_FILE).write_text(compute_sum_file(read_migration_files(directory)))


async def test_a_tampered_migration_is_refused(empty_database: str, directory: Path) -> None:
    edit_first_migration(directory, b"\n-- sneaky edit\n")

    with pytest.raises(MigrationError, match="does not match"):
        await apply_migrations(empty_database, directory)


async def test_a_changed_applied_migration_is_refused(database_url: str, directory: Path) -> None:
    edit_first_migration(directory, b"\n-- edited after apply\n")
    rehash(directory)

    with pytest.raises(MigrationError, match="changed after it was applied"):
        await apply_migrations(database_url, directory)


async def test_a_failing_migration_leaves_nothing_behind(
    empty_database: str, directory: Path
) -> None:
    (directory / "99990101000000_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;\n"
    )
    rehash(directory)

    with pytest.raises(asyncpg.UndefinedTableError):
        await apply_migrations(empty_database, directory)

    tables = (await catalog(empty_database))["tables"]
    assert ("half_done",) not in tables
    assert ("products",) in tables  # earlier files were applied and kept


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1;", ["SELECT 1;"]),
        ("SELECT 1; SELECT 2;", ["SELECT 1;", "SELECT 2;"]),
        ("-- comment; not a statement\nSELECT 1;", ["-- comment; not a statement\nSELECT 1;"]),
        ("SELECT ';';", ["SELECT ';';"]),
        ("SELECT 'it''s; fine';", ["SELECT 'it''s; fine';"]),
        ('SELECT 1 AS "a;b";', ['SELECT 1 AS "a;b";']),
        ("/* x; y */ SELECT 1;", ["/* x; y */ SELECT 1;"]),
        (
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\nSELECT 2;",
            ["CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;", "SELECT 2;"],
        ),
        ("DO $body$ BEGIN PERFORM 1; END $body$;", ["DO $body$ BEGIN PERFORM 1; END $body$;"]),
        ("SELECT $1;", ["SELECT $1;"]),
        ("SELECT 1;\n-- trailing comment\n", ["SELECT 1;"]),
        ("SELECT 1", ["SELECT 1"]),
    ],
)
def test_split_statements(sql: str, expected: list[str]) -> None:
    assert split_statements(sql) == expected


PARTITIONING_MIGRATION = "20261202060000_partition_audit.sql"


def _drop_from(directory: Path, first: str) -> None:
    """Leave out the migration `first` and every one after it."""
    for migration in directory.glob("*.sql"):
        if migration.name >= first:
            migration.unlink()


async def _audit_rows(connection: asyncpg.Connection) -> dict[str, list[asyncpg.Record]]:
    return {
        table: await connection.fetch(f"SELECT * FROM {table} ORDER BY id")  # noqa: S608  # constants
        for table in ("access_logs", "data_changes")
    }


async def test_partitioning_the_audit_tables_keeps_every_row_and_the_ids_rising(
    empty_database: str, directory: Path, migrations_dir: Path
) -> None:
    """Applied to a database with audit rows over several months: every row is in its
    month's partition, unchanged; the next id follows the last one; the data-change trigger
    still records."""
    _drop_from(directory, PARTITIONING_MIGRATION)  # the database as it was before it
    rehash(directory)
    await apply_migrations(empty_database, directory)
    connection = await asyncpg.connect(libpq_url(empty_database))
    try:
        await connection.execute("""
            INSERT INTO access_logs (occurred_at, request_id, user_id, client_ip, user_agent,
                                     method, path, status, duration_ms)
            SELECT timestamptz '2026-07-31 23:59:59.999999Z' + n * interval '9 days 7 hours',
                   'req-' || n, nullif(n % 3, 0), '10.0.0.1'::inet + n, 'agent ' || n,
                   'GET', '/api/v1/products/' || n, 200 + n, n * 1.5
            FROM generate_series(0, 40) AS n""")
        await connection.execute(
            "INSERT INTO products (sku, name, price) VALUES ('SKU-1', 'Lamp', 10)"
        )
        await connection.execute("""
            INSERT INTO data_changes (occurred_at, entity_type, entity_id, action, new_values)
            VALUES ('2025-01-15Z', 'product', '99', 'insert', '{"name": "old"}')""")
        before = await _audit_rows(connection)
        last_ids = {
            table: await connection.fetchval(f"SELECT last_value FROM {table}_id_seq")  # noqa: S608  # constants
            for table in before
        }

        await apply_migrations(empty_database, migrations_dir)

        after = await _audit_rows(connection)
        placement = await connection.fetch("""
            SELECT tableoid::regclass::text AS partition, occurred_at FROM access_logs
            UNION ALL SELECT tableoid::regclass::text, occurred_at FROM data_changes""")
        await connection.execute("UPDATE products SET name = 'Lamp 2'")
        change = await connection.fetchrow(
            "SELECT id, action::text, new_values::text FROM data_changes ORDER BY id DESC LIMIT 1"
        )
        access_id = await connection.fetchval(
            "INSERT INTO access_logs (occurred_at, request_id, method, path, status, duration_ms) "
            "VALUES (now(), 'new', 'GET', '/', 200, 1) RETURNING id"
        )
    finally:
        await connection.close()

    assert len(before["access_logs"]) == 41
    assert len(before["data_changes"]) == 2
    # Every column the rows had, unchanged (a later migration may add columns).
    assert {
        table: [{column: row[column] for column in dict(rows[0])} for row in after[table]]
        for table, rows in before.items()
    } == {table: [dict(row) for row in rows] for table, rows in before.items()}
    assert {
        (row["partition"].split("_p")[-1], f"{row['occurred_at']:%Y_%m}") for row in placement
    } == {(f"{row['occurred_at']:%Y_%m}",) * 2 for row in placement}
    assert not any(row["partition"].endswith("_default") for row in placement)
    assert change is not None
    assert (change["id"], change["action"], change["new_values"]) == (
        last_ids["data_changes"] + 1,
        "update",
        '{"name": "Lamp 2"}',
    )
    assert access_id == last_ids["access_logs"] + 1
