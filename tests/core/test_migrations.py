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

# Every property of the schema that drift could touch, as comparable rows.
_CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, udt_name, character_maximum_length,
               numeric_precision,
               numeric_scale, datetime_precision, is_nullable, column_default, is_identity,
               identity_generation, collation_name
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "constraints": """
        SELECT rel.relname, con.conname, con.contype, pg_get_constraintdef(con.oid, true)
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace WHERE ns.nspname = 'public'""",
    "tables": "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
    "enums": """
        SELECT typ.typname, enum.enumlabel, enum.enumsortorder
        FROM pg_enum enum JOIN pg_type typ ON typ.oid = enum.enumtypid
        JOIN pg_namespace ns ON ns.oid = typ.typnamespace WHERE ns.nspname = 'public'""",
    "extensions": "SELECT extname FROM pg_extension",
    "triggers": """
        SELECT rel.relname, trg.tgname, pg_get_triggerdef(trg.oid)
        FROM pg_trigger trg JOIN pg_class rel ON rel.oid = trg.tgrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace
        WHERE ns.nspname = 'public' AND NOT trg.tgisinternal""",
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


async def catalog(url: str) -> dict[str, set[tuple[Any, ...]]]:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        return {
            name: {tuple(row) for row in await connection.fetch(query)}
            for name, query in _CATALOG_QUERIES.items()
        }
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

    for kind in _CATALOG_QUERIES:
        assert migrated[kind] - declared[kind] == set(), f"{kind} only in migrations"
        assert declared[kind] - migrated[kind] == set(), f"{kind} only in models"


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
