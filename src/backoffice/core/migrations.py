"""Apply Atlas versioned migrations without the Atlas CLI.

The embedded database and the tests cannot rely on the Atlas binary (it cannot be installed on
every machine), so this module does what `atlas migrate apply` does, the same way: it checks
`atlas.sum`, runs each pending file in its own transaction, and records it in Atlas's own
revisions table, so `atlas migrate status` agrees with it and the two can take turns.
"""

import base64
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog

from backoffice.core.database import libpq_url

SUM_FILE = "atlas.sum"
REVISIONS_SCHEMA = "atlas_schema_revisions"
REVISION_TYPE_BASELINE = 1
REVISION_TYPE_EXECUTE = 2
OPERATOR_VERSION = "backoffice-migrator/1 (atlas-compatible)"
# Any constant works; it only has to be the same for every process that migrates.
_ADVISORY_LOCK_ID = 0x6261636B6F6666

log = structlog.get_logger(__name__)

_REVISIONS_DDL = f"""
CREATE SCHEMA IF NOT EXISTS "{REVISIONS_SCHEMA}";
CREATE TABLE IF NOT EXISTS "{REVISIONS_SCHEMA}"."atlas_schema_revisions" (
    "version" character varying NOT NULL,
    "description" character varying NOT NULL,
    "type" bigint NOT NULL DEFAULT 2,
    "applied" bigint NOT NULL DEFAULT 0,
    "total" bigint NOT NULL DEFAULT 0,
    "executed_at" timestamptz NOT NULL,
    "execution_time" bigint NOT NULL,
    "error" text NULL,
    "error_stmt" text NULL,
    "hash" character varying NOT NULL,
    "partial_hashes" jsonb NULL,
    "operator_version" character varying NOT NULL,
    PRIMARY KEY ("version")
);
"""


class MigrationError(RuntimeError):
    """The migration directory or the database's history is not in a state we can apply."""


@dataclass(frozen=True, slots=True)
class MigrationFile:
    name: str
    content: bytes

    @property
    def version(self) -> str:
        return self.name.removesuffix(".sql").split("_", 1)[0]

    @property
    def description(self) -> str:
        stem = self.name.removesuffix(".sql")
        return stem.split("_", 1)[1] if "_" in stem else ""

    @property
    def sum_ignored(self) -> bool:
        first_line = self.content.split(b"\n", 1)[0]
        return b"atlas:sum ignore" in first_line


def read_migration_files(directory: Path) -> list[MigrationFile]:
    paths = sorted(directory.glob("*.sql"), key=lambda path: path.name.encode())
    return [MigrationFile(path.name, path.read_bytes()) for path in paths]


def file_hashes(files: list[MigrationFile]) -> list[tuple[str, str]]:
    """Atlas's per-file hashes: one running SHA-256 over every name and (unless ignored)
    content so far, so each hash also seals the order and content of the files before it."""
    running = hashlib.sha256()
    hashes = []
    for file in files:
        running.update(file.name.encode())
        if not file.sum_ignored:
            running.update(file.content)
        hashes.append((file.name, base64.b64encode(running.copy().digest()).decode()))
    return hashes


def compute_sum_file(files: list[MigrationFile]) -> str:
    hashes = file_hashes(files)
    total = hashlib.sha256()
    for name, digest in hashes:
        total.update(name.encode())
        total.update(digest.encode())
    lines = [f"h1:{base64.b64encode(total.digest()).decode()}"]
    lines += [f"{name} h1:{digest}" for name, digest in hashes]
    return "\n".join(lines) + "\n"


def verify_sum_file(directory: Path) -> list[MigrationFile]:
    """The migration files, after checking that `atlas.sum` matches them byte for byte."""
    files = read_migration_files(directory)
    sum_path = directory / SUM_FILE
    if not sum_path.exists():
        raise MigrationError(f"{sum_path} is missing; run `task migrate-hash`")
    if sum_path.read_text() != compute_sum_file(files):
        raise MigrationError(
            f"{sum_path} does not match the migration files (edited by hand?); "
            "run `task migrate-hash` after reviewing the change"
        )
    return files


def _end_of_line_comment(sql: str, index: int) -> int:
    newline = sql.find("\n", index)
    return len(sql) if newline == -1 else newline + 1


def _end_of_block_comment(sql: str, index: int) -> int:
    end = sql.find("*/", index + 2)
    return len(sql) if end == -1 else end + 2


def _end_of_quoted(sql: str, index: int) -> int:
    quote, end = sql[index], index + 1
    while end < len(sql):
        if sql[end] != quote:
            end += 1
        elif sql.startswith(quote * 2, end):  # a doubled quote is an escaped quote
            end += 2
        else:
            return end + 1
    return len(sql)


def _end_of_dollar_quoted(sql: str, index: int) -> int:
    tag_end = sql.find("$", index + 1)
    tag = sql[index : tag_end + 1]
    if tag_end == -1 or not (tag == "$$" or tag[1:-1].replace("_", "a").isalnum()):
        return index + 1  # a positional parameter such as $1, not a dollar quote
    end = sql.find(tag, tag_end + 1)
    return len(sql) if end == -1 else end + len(tag)


def _skip(sql: str, index: int) -> int | None:
    """Where the comment or quoted text starting at `index` ends; None if none starts there."""
    two = sql[index : index + 2]
    if two == "--":
        return _end_of_line_comment(sql, index)
    if two == "/*":
        return _end_of_block_comment(sql, index)
    skipper = _QUOTE_SKIPPERS.get(sql[index])
    return skipper(sql, index) if skipper else None


_QUOTE_SKIPPERS = {"'": _end_of_quoted, '"': _end_of_quoted, "$": _end_of_dollar_quoted}


def split_statements(sql: str) -> list[str]:
    """Split a migration file into statements on `;`, respecting quotes, dollar quotes and
    comments, as Atlas does."""
    statements: list[str] = []
    start = index = 0
    while index < len(sql):
        skipped = _skip(sql, index)
        if skipped is not None:
            index = skipped
            continue
        if sql[index] == ";":
            statements.append(sql[start : index + 1].strip())
            start = index + 1
        index += 1
    statements.append(sql[start:].strip())
    return [statement for statement in statements if _has_code(statement)]


def _has_code(statement: str) -> bool:
    lines = (line.strip() for line in statement.splitlines())
    return any(line and not line.startswith("--") for line in lines) and statement != ";"


@dataclass(frozen=True, slots=True)
class AppliedRevision:
    version: str
    hash: str
    applied: int
    total: int
    error: str | None


async def _applied_revisions(connection: asyncpg.Connection) -> dict[str, AppliedRevision]:
    rows = await connection.fetch(
        "SELECT version, hash, applied, total, error "  # noqa: S608  # constants only
        f'FROM "{REVISIONS_SCHEMA}".atlas_schema_revisions '
        "WHERE type = ANY($1::bigint[]) ORDER BY version",
        [REVISION_TYPE_BASELINE, REVISION_TYPE_EXECUTE],
    )
    return {row["version"]: AppliedRevision(**dict(row)) for row in rows}


async def _revisions_table_exists(connection: asyncpg.Connection) -> bool:
    found: bool = await connection.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f'"{REVISIONS_SCHEMA}".atlas_schema_revisions'
    )
    return found


def _pending(
    files: list[MigrationFile], applied: dict[str, AppliedRevision]
) -> list[MigrationFile]:
    hashes = dict(file_hashes(files))
    for revision in applied.values():
        if revision.error or revision.applied < revision.total:
            raise MigrationError(
                f"migration {revision.version} is partially applied "
                f"({revision.error or 'incomplete'}); fix the database by hand, then "
                "`atlas migrate set` or delete its revision row"
            )
    for file in files:
        applied_file = applied.get(file.version)
        if applied_file is not None and applied_file.hash != hashes[file.name]:
            raise MigrationError(f"{file.name} changed after it was applied (hash mismatch)")
    pending = [file for file in files if file.version not in applied]
    last_applied = max(applied, default="")
    out_of_order = [file.name for file in pending if file.version < last_applied]
    if out_of_order:
        raise MigrationError(f"migration files added before the last applied one: {out_of_order}")
    return pending


async def apply_migrations(url: str, directory: Path) -> list[str]:
    """Apply every pending migration in `directory` to the database at `url`; return the
    versions applied. Safe to call from several processes at once (advisory lock)."""
    files = verify_sum_file(directory)
    hashes = dict(file_hashes(files))
    connection = await asyncpg.connect(libpq_url(url))
    try:
        # Nothing pending, as on every start but the first after a new migration: answered
        # (and checked: hashes, order) from the revisions table alone, without waiting for the
        # lock or running the DDL. A migration applies and records itself in one transaction,
        # so this read never sees half of one.
        if await _revisions_table_exists(connection) and not _pending(
            files, await _applied_revisions(connection)
        ):
            return []
        await connection.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_ID)
        try:
            await connection.execute(_REVISIONS_DDL)
            pending = _pending(files, await _applied_revisions(connection))
            for file in pending:
                await _apply_file(connection, file, hashes[file.name])
            return [file.version for file in pending]
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_ID)
    finally:
        await connection.close()


async def _apply_file(connection: asyncpg.Connection, file: MigrationFile, file_hash: str) -> None:
    statements = split_statements(file.content.decode())
    started = time.perf_counter_ns()
    async with connection.transaction():
        for statement in statements:
            await connection.execute(statement)
        await connection.execute(
            f'INSERT INTO "{REVISIONS_SCHEMA}".atlas_schema_revisions '  # noqa: S608  # constant
            "(version, description, type, applied, total, executed_at, execution_time, "
            "error, error_stmt, hash, partial_hashes, operator_version) "
            "VALUES ($1, $2, $3, $4, $4, $5, $6, NULL, NULL, $7, NULL, $8)",
            file.version,
            file.description,
            REVISION_TYPE_EXECUTE,
            len(statements),
            datetime.now(UTC),
            time.perf_counter_ns() - started,
            file_hash,
            OPERATOR_VERSION,
        )
    log.info("migration.applied", version=file.version, statements=len(statements))
