"""The audit archive (backoffice.audit.archive; its command line, scripts/archive_audit.py):
old audit rows move to gzip-compressed JSON Lines files and out of the database, batch by batch,
with nothing lost and nothing duplicated across crashes and re-runs.

The script commits for real, so these tests do too, on the session's database: the audit tables
and the archive bookkeeping are emptied before and after each test."""

import asyncio
import gzip
import hashlib
import json
import math
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from backoffice.audit import archive as archive_module
from backoffice.audit.archive import BatchResult, Summary, archive
from backoffice.audit.models import APPEND_ONLY_TABLES, RETENTION_SETTING
from backoffice.core.config import PROJECT_ROOT
from backoffice.core.database import libpq_url

SCRIPT = PROJECT_ROOT / "scripts" / "archive_audit.py"
RETENTION = timedelta(days=90)
# A retention that keeps the 120-day-old rows: a first run with it and a resumed run with
# RETENTION batch the remaining rows differently.
LONG_RETENTION = timedelta(days=150)
BATCH_SIZE = 64
ACCESS_LOGS, DATA_CHANGES = APPEND_ONLY_TABLES

pytestmark = pytest.mark.committed


class InterruptedRunError(Exception):
    """Stands for a crash or a Ctrl-C in the middle of a run."""


@dataclass(frozen=True, slots=True)
class Seeded:
    """The rows inserted, by table and id, with the values the archive must hold."""

    now: datetime
    rows: Mapping[str, Mapping[int, dict[str, Any]]]

    def older_than(self, table: str, age: timedelta) -> set[int]:
        cutoff = self.now - age
        return {id_ for id_, row in self.rows[table].items() if row["occurred_at"] < cutoff}


async def _empty_audit_tables(connection: asyncpg.Connection) -> None:
    async with connection.transaction():
        # The audit tables refuse TRUNCATE except from the retention job, which this stands for.
        await connection.execute(f"SET LOCAL {RETENTION_SETTING} = 'on'")
        await connection.execute("TRUNCATE access_logs, data_changes, audit_archive_batches")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection outside any test transaction. The tables are emptied first too, so rows
    committed by other tests cannot skew the counts."""
    connection = await asyncpg.connect(libpq_url(database_url))
    await _empty_audit_tables(connection)
    try:
        yield connection
    finally:
        await _empty_audit_tables(connection)
        await connection.close()


def _age(number: int) -> timedelta:
    """1 row in 11 is a day old (kept); the others are 200 or 120 days old, alternately, so
    kept and archived rows interleave in id order. Seconds and microseconds vary so that the
    timestamps' round trip is exact."""
    days = 1 if number % 11 == 10 else 200 if number % 2 == 0 else 120
    return timedelta(days=days, seconds=number, microseconds=number * 7)


async def _insert_access_logs(connection: asyncpg.Connection, now: datetime) -> dict[int, Any]:
    rows: dict[int, dict[str, Any]] = {}
    for number in range(330):
        row: dict[str, Any] = {
            "occurred_at": now - _age(number),
            "request_id": f"req-{number}",
            "user_id": number % 7 or None,
            "client_ip": (f"10.0.{number // 256}.{number % 256}", f"2001:db8::{number:x}", None)[
                number % 3
            ],
            "user_agent": f"agent/{number} (é)" if number % 4 else None,
            "method": ("GET", "POST", "PATCH", "DELETE")[number % 4],
            "path": f"/api/v1/products/{number}",
            "status": (200, 201, 404, 422)[number % 4],
            "duration_ms": number * 1.25 + 0.5,
        }
        row_id = await connection.fetchval(
            "INSERT INTO access_logs (occurred_at, request_id, user_id, client_ip, user_agent, "
            "method, path, status, duration_ms) "
            "VALUES ($1, $2, $3, $4::inet, $5, $6, $7, $8, $9) RETURNING id",
            *row.values(),
        )
        rows[row_id] = {"id": row_id, **row, "api_key_id": None}  # every column is archived
    return rows


async def _insert_data_changes(connection: asyncpg.Connection, now: datetime) -> dict[int, Any]:
    rows: dict[int, dict[str, Any]] = {}
    for number in range(220):
        action = ("insert", "update", "delete")[number % 3]
        old = {"name": f"Lampe n° {number}: ünïcode, 日本", "price": "10.00", "tags": ["a", number]}
        new = {"name": f"Lamp {number + 1}", "active": number % 2 == 0, "note": None}
        row: dict[str, Any] = {
            "occurred_at": now - _age(number),
            "entity_type": "product",
            "entity_id": str(number),
            "action": action,
            "old_values": None if action == "insert" else old,
            "new_values": None if action == "delete" else new,
            "actor_user_id": number % 5 or None,
            "request_id": f"req-{number}" if number % 2 else None,
        }
        row_id = await connection.fetchval(
            "INSERT INTO data_changes (occurred_at, entity_type, entity_id, action, old_values, "
            "new_values, actor_user_id, request_id) "
            "VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8) RETURNING id",
            *(json.dumps(value) if isinstance(value, dict) else value for value in row.values()),
        )
        rows[row_id] = {"id": row_id, **row, "api_key_id": None}  # every column is archived
    return rows


@pytest.fixture
async def seeded(db: asyncpg.Connection) -> Seeded:
    """500 rows older than RETENTION (300 access logs, 200 data changes), 50 recent ones."""
    now = datetime.now(UTC)
    async with db.transaction():
        rows = {
            ACCESS_LOGS: await _insert_access_logs(db, now),
            DATA_CHANGES: await _insert_data_changes(db, now),
        }
    seeded = Seeded(now=now, rows=rows)
    assert len(seeded.older_than(ACCESS_LOGS, RETENTION)) == 300
    assert len(seeded.older_than(DATA_CHANGES, RETENTION)) == 200
    return seeded


async def _archive(database_url: str, output_dir: Path, **options: Any) -> Summary:
    arguments: dict[str, Any] = {
        "older_than": RETENTION,
        "batch_size": BATCH_SIZE,
        "progress": False,
    } | options
    return await archive(database_url, output_dir=output_dir, **arguments)


def _archived_rows(output_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every archive file, by table (the file's directory), timestamps parsed."""
    rows: dict[str, list[dict[str, Any]]] = {table: [] for table in APPEND_ONLY_TABLES}
    for path in sorted(output_dir.glob("*/*.jsonl.gz")):
        for line in gzip.decompress(path.read_bytes()).splitlines():
            row = json.loads(line)
            rows[path.parent.name].append(
                row | {"occurred_at": datetime.fromisoformat(row["occurred_at"])}
            )
    return rows


async def _ids_in_database(connection: asyncpg.Connection, table: str) -> set[int]:
    return {record["id"] for record in await connection.fetch(f"SELECT id FROM {table}")}  # noqa: S608  # a test constant


def _files(output_dir: Path) -> dict[str, Path]:
    """Every file under the archive directory, by its name relative to it."""
    return {
        path.relative_to(output_dir).as_posix(): path
        for path in output_dir.rglob("*")
        if path.is_file()
    }


async def _assert_bookkeeping_matches_files(
    connection: asyncpg.Connection, output_dir: Path
) -> list[asyncpg.Record]:
    """Every file (and nothing else: no temporary or unfinished file) has its bookkeeping row,
    with its size, hash, row count and id range."""
    batches = await connection.fetch("SELECT * FROM audit_archive_batches ORDER BY id")
    files = _files(output_dir)
    assert set(files) == {batch["file_name"] for batch in batches}
    for batch in batches:
        data = files[batch["file_name"]].read_bytes()
        ids = [json.loads(line)["id"] for line in gzip.decompress(data).splitlines()]
        table = batch["table_name"]
        assert batch["file_name"] == f"{table}/{table}-{ids[0]:012d}-{ids[-1]:012d}.jsonl.gz"
        assert ids == sorted(ids)
        assert (batch["first_id"], batch["last_id"], batch["row_count"]) == (
            ids[0],
            ids[-1],
            len(ids),
        )
        assert batch["file_bytes"] == len(data)
        assert batch["sha256"] == hashlib.sha256(data).hexdigest()
    return batches


async def test_round_trip_archives_exactly_the_old_rows_and_deletes_them(
    database_url: str, db: asyncpg.Connection, seeded: Seeded, tmp_path: Path
) -> None:
    summary = await _archive(database_url, tmp_path)

    archived = _archived_rows(tmp_path)
    for table in APPEND_ONLY_TABLES:
        old = seeded.older_than(table, RETENTION)
        assert len(archived[table]) == len(old)
        assert {row["id"]: row for row in archived[table]} == {
            id_: seeded.rows[table][id_] for id_ in old
        }
        assert await _ids_in_database(db, table) == seeded.rows[table].keys() - old
    batches = await _assert_bookkeeping_matches_files(db, tmp_path)
    assert [(table.table, table.rows, table.files, table.bytes) for table in summary.tables] == [
        (
            table,
            len(seeded.older_than(table, RETENTION)),
            math.ceil(len(seeded.older_than(table, RETENTION)) / BATCH_SIZE),
            sum(batch["file_bytes"] for batch in batches if batch["table_name"] == table),
        )
        for table in APPEND_ONLY_TABLES
    ]
    assert (summary.rows, summary.files) == (500, len(batches))
    assert summary.bytes == sum(batch["file_bytes"] for batch in batches)
    assert not summary.dry_run
    assert summary.output_dir == tmp_path


@pytest.mark.parametrize(
    "resume_retention", [LONG_RETENTION, RETENTION], ids=["same-cutoff", "later-cutoff"]
)
async def test_crash_between_batches_and_before_a_commit_then_resume_loses_and_duplicates_nothing(
    *,
    database_url: str,
    db: asyncpg.Connection,
    seeded: Seeded,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    resume_retention: timedelta,
) -> None:
    committed: list[BatchResult] = []

    def interrupt_after_two_batches(batch: BatchResult) -> None:
        committed.append(batch)
        if len(committed) == 2:
            raise InterruptedRunError

    with pytest.raises(InterruptedRunError):
        await _archive(
            database_url,
            tmp_path,
            older_than=LONG_RETENTION,
            after_batch=interrupt_after_two_batches,
        )
    # InterruptedRunError between batches: two complete batches, the rest untouched.
    assert [batch.row_count for batch in committed] == [BATCH_SIZE, BATCH_SIZE]
    await _assert_bookkeeping_matches_files(db, tmp_path)
    gone = {row["id"] for row in _archived_rows(tmp_path)[ACCESS_LOGS]}
    assert len(gone) == 2 * BATCH_SIZE
    assert await _ids_in_database(db, ACCESS_LOGS) == seeded.rows[ACCESS_LOGS].keys() - gone

    async def crash_before_commit(*_: object) -> None:
        raise InterruptedRunError

    with monkeypatch.context() as patch:
        patch.setattr(archive_module, "_commit_batch", crash_before_commit)
        with pytest.raises(InterruptedRunError):
            await _archive(database_url, tmp_path, older_than=LONG_RETENTION)
    # Crashed after writing the third batch's file, before its transaction: the file is there,
    # unrecorded, and its rows are all still in the table.
    recorded = {
        batch["file_name"] for batch in await db.fetch("SELECT * FROM audit_archive_batches")
    }
    unfinished = [path for name, path in _files(tmp_path).items() if name not in recorded]
    assert len(unfinished) == 1
    unfinished_ids = {
        json.loads(line)["id"] for line in gzip.decompress(unfinished[0].read_bytes()).splitlines()
    }
    assert unfinished_ids
    assert unfinished_ids <= await _ids_in_database(db, ACCESS_LOGS)

    resumed = await _archive(database_url, tmp_path, older_than=resume_retention)

    archived = _archived_rows(tmp_path)
    for table in APPEND_ONLY_TABLES:
        old = seeded.older_than(table, resume_retention)
        counts = Counter(row["id"] for row in archived[table])
        assert set(counts) == old
        assert set(counts.values()) == {1}  # no row in two files
        assert await _ids_in_database(db, table) == seeded.rows[table].keys() - old
    await _assert_bookkeeping_matches_files(db, tmp_path)
    assert resumed.rows == sum(
        len(seeded.older_than(table, resume_retention)) for table in APPEND_ONLY_TABLES
    ) - len(gone)


async def test_dry_run_reports_and_changes_nothing(
    database_url: str, db: asyncpg.Connection, seeded: Seeded, tmp_path: Path
) -> None:
    output_dir = tmp_path / "archive"

    summary = await _archive(database_url, output_dir, dry_run=True)

    assert summary.dry_run
    assert [(table.table, table.rows, table.files, table.bytes) for table in summary.tables] == [
        (ACCESS_LOGS, 300, math.ceil(300 / BATCH_SIZE), 0),
        (DATA_CHANGES, 200, 4, 0),
    ]
    assert (summary.rows, summary.files) == (500, 9)
    assert not output_dir.exists()
    for table in APPEND_ONLY_TABLES:
        assert await _ids_in_database(db, table) == seeded.rows[table].keys()
    assert await db.fetchval("SELECT count(*) FROM audit_archive_batches") == 0


async def test_a_run_with_nothing_old_is_a_no_op(
    database_url: str, db: asyncpg.Connection, seeded: Seeded, tmp_path: Path
) -> None:
    await _archive(database_url, tmp_path)
    files = {name: path.read_bytes() for name, path in _files(tmp_path).items()}

    summary = await _archive(database_url, tmp_path)

    assert [(table.table, table.rows, table.files, table.bytes) for table in summary.tables] == [
        (table, 0, 0, 0) for table in APPEND_ONLY_TABLES
    ]
    assert (summary.rows, summary.files, summary.bytes) == (0, 0, 0)
    assert {name: path.read_bytes() for name, path in _files(tmp_path).items()} == files
    for table in APPEND_ONLY_TABLES:
        assert await _ids_in_database(db, table) == seeded.rows[table].keys() - (
            seeded.older_than(table, RETENTION)
        )


async def test_an_unrecorded_file_whose_rows_are_not_in_the_table_stops_the_run(
    database_url: str, db: asyncpg.Connection, seeded: Seeded, tmp_path: Path
) -> None:
    """Such a file is not an unfinished batch (another database's archive?): it is kept, and
    nothing is archived until someone looks."""
    stray = tmp_path / ACCESS_LOGS / f"{ACCESS_LOGS}-{10**9:012d}-{10**9 + 1:012d}.jsonl.gz"
    stray.parent.mkdir()
    content = gzip.compress(b'{"id":1000000000}\n{"id":1000000001}\n')
    stray.write_bytes(content)

    with pytest.raises(archive_module.ArchiveError, match="2 of its 2 rows are not in access_logs"):
        await _archive(database_url, tmp_path)

    assert _files(tmp_path) == {stray.relative_to(tmp_path).as_posix(): stray}
    assert stray.read_bytes() == content
    for table in APPEND_ONLY_TABLES:
        assert await _ids_in_database(db, table) == seeded.rows[table].keys()


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
async def test_only_the_retention_setting_lets_rows_be_deleted(
    db: asyncpg.Connection, seeded: Seeded, table: str
) -> None:
    """The script's permission to delete comes from SET LOCAL, for its own transaction only."""
    row_id = min(seeded.rows[table])
    delete = f"DELETE FROM {table} WHERE id = $1"  # noqa: S608  # a test constant

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(delete, row_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(f"TRUNCATE {table}")
    transaction = db.transaction()
    await transaction.start()
    await db.execute(f"SET LOCAL {RETENTION_SETTING} = 'on'")
    assert await db.execute(delete, row_id) == "DELETE 1"
    await transaction.rollback()
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(delete, row_id)  # the setting ended with its transaction
    assert await _ids_in_database(db, table) == seeded.rows[table].keys()


async def _run_script(*arguments: str, env: Mapping[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *arguments,
        env={**os.environ, **env},
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_command_line_takes_its_defaults_from_the_settings_and_prints_a_summary(
    database_url: str,
    app_database_url: str,
    db: asyncpg.Connection,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    env = {
        # The app's role may not delete audit rows: the script must use the owner's URL.
        "DATABASE_URL": app_database_url,
        "DATABASE_OWNER_URL": database_url,
        "AUDIT_RETENTION_DAYS": str(LONG_RETENTION.days),
        "AUDIT_ARCHIVE_DIR": str(tmp_path),
    }
    old = seeded.older_than(ACCESS_LOGS, LONG_RETENTION)
    files = math.ceil(len(old) / 100)

    dry_run = await _run_script("--batch-size", "100", "--table", ACCESS_LOGS, "--dry-run", env=env)

    assert "Dry run, nothing changed" in dry_run
    assert f"{ACCESS_LOGS}: {len(old)} rows in {files} files\n" in dry_run
    assert _files(tmp_path) == {}

    output = await _run_script("--batch-size", "100", "--table", ACCESS_LOGS, env=env)

    size = sum(path.stat().st_size for path in _files(tmp_path).values())
    assert f"to {tmp_path}\n" in output
    assert f"{ACCESS_LOGS}: {len(old)} rows in {files} files, {size} bytes\n" in output
    assert output.endswith(f"total: {len(old)} rows in {files} files, {size} bytes\n")
    assert DATA_CHANGES not in output
    assert await _ids_in_database(db, ACCESS_LOGS) == seeded.rows[ACCESS_LOGS].keys() - old
    assert await _ids_in_database(db, DATA_CHANGES) == seeded.rows[DATA_CHANGES].keys()
    await _assert_bookkeeping_matches_files(db, tmp_path)
