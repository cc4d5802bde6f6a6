"""The audit archive (backoffice.audit.archive; its command line, scripts/archive_audit.py):
old audit rows move to gzip-compressed JSON Lines files and out of the database, whole month
partitions detached and dropped, the rest batch by batch, with nothing lost and nothing
duplicated across crashes and re-runs.

The script commits for real, so these tests do too, on the session's database: the audit tables
and the archive bookkeeping are emptied before and after each test, and the month partitions
before this one dropped.

The rows are laid out by month around a cut-off C, 10 days into the month two months back (M2):
M4 and M3 lie entirely before C (the partition path), M2 straddles it (the row path), and a
few rows are recent. A longer retention's cut-off, 10 days into M3, makes M3 the straddling one.
"""

import asyncio
import gzip
import hashlib
import json
import math
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from backoffice.audit import archive as archive_module
from backoffice.audit.archive import BatchResult, Summary, archive
from backoffice.audit.models import APPEND_ONLY_TABLES, RETENTION_SETTING
from backoffice.audit.partitions import ENSURE_FUNCTION
from backoffice.core.config import PROJECT_ROOT
from backoffice.core.database import libpq_url

SCRIPT = PROJECT_ROOT / "scripts" / "archive_audit.py"
BATCH_SIZE = 64
ACCESS_LOGS, DATA_CHANGES = APPEND_ONLY_TABLES
# Rows are this far from any cut-off at least, so the run's own clock (a little later than
# the test's) puts every row on the side the test expects.
MARGIN = timedelta(minutes=30)

pytestmark = pytest.mark.committed


class InterruptedRunError(Exception):
    """Stands for a crash or a Ctrl-C in the middle of a run."""


def month_start(instant: datetime, back: int = 0) -> datetime:
    """The first instant (UTC) of the month `back` months before `instant`'s."""
    year, month = divmod(instant.year * 12 + instant.month - 1 - back, 12)
    return datetime(year, month + 1, 1, tzinfo=UTC)


def partition_of(table: str, instant: datetime) -> str:
    return f"{table}_p{instant:%Y_%m}"


@dataclass(frozen=True, slots=True)
class Seeded:
    """The rows inserted, by table and id, with the values the archive must hold."""

    now: datetime
    rows: Mapping[str, Mapping[int, dict[str, Any]]]

    @property
    def cutoff(self) -> datetime:
        """C: M4 and M3 whole, M2 straddling."""
        return month_start(self.now, 2) + timedelta(days=10)

    @property
    def long_cutoff(self) -> datetime:
        """A longer retention's: M4 whole, M3 straddling, M2 kept."""
        return month_start(self.now, 3) + timedelta(days=10)

    def age(self, cutoff: datetime) -> timedelta:
        """The `older_than` that puts the run's cut-off at `cutoff`."""
        return self.now - cutoff

    def older_than(self, table: str, cutoff: datetime) -> set[int]:
        return {id_ for id_, row in self.rows[table].items() if row["occurred_at"] < cutoff}

    def in_month(self, table: str, back: int) -> set[int]:
        """The ids of the rows of the month `back` months ago."""
        month = month_start(self.now, back)
        return {
            id_ for id_, row in self.rows[table].items() if month_start(row["occurred_at"]) == month
        }

    def expected(self, table: str, cutoff: datetime, batch_size: int) -> tuple[int, int, int]:
        """Rows, files and whole partitions a run with `cutoff` archives: one file per batch
        of each whole month, then the rest in batches."""
        old = self.older_than(table, cutoff)
        by_month = Counter(month_start(row["occurred_at"]) for row in self.rows[table].values())
        whole = [count for month, count in by_month.items() if month_start(month, -1) <= cutoff]
        rest = len(old) - sum(whole)
        files = sum(math.ceil(count / batch_size) for count in [*whole, rest])
        return len(old), files, len(whole)


def _when(now: datetime, number: int) -> datetime:
    """1 row in 11 is kept (recent, or just after C in M2); the others go to M4, M3 and M2
    before C in turn, so rows of every kind interleave in id order. Seconds and microseconds
    vary so that the timestamps' round trip is exact."""
    jitter = timedelta(seconds=number % 60, microseconds=number * 7)
    cutoff = month_start(now, 2) + timedelta(days=10)
    index = number // 3
    if number % 11 == 10:
        kept = now - timedelta(days=1) if number % 2 else cutoff + MARGIN + timedelta(hours=index)
        return kept + jitter
    match number % 3:
        case 0:
            return month_start(now, 4) + timedelta(hours=4 * index + 2) + jitter
        case 1:
            return month_start(now, 3) + timedelta(hours=4 * index + 2) + jitter
        case _:
            window = cutoff - MARGIN - month_start(now, 2)
            return month_start(now, 2) + window * (index / 120) + jitter


async def _empty_audit_tables(connection: asyncpg.Connection) -> None:
    """Empty the audit tables and the bookkeeping, and drop every month partition before this
    one (and any a crashed run left detached), so each test starts from the same layout."""
    async with connection.transaction():
        # The audit tables refuse TRUNCATE except from the retention job, which this stands for.
        await connection.execute(f"SET LOCAL {RETENTION_SETTING} = 'on'")
        await connection.execute("TRUNCATE access_logs, data_changes, audit_archive_batches")
        old = await connection.fetch(
            "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind = 'r' AND relname ~ '^(access_logs|data_changes)_p[0-9]{4}_[0-9]{2}$' "
            "AND right(relname, 7) < to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')"
        )
        for row in old:
            await connection.execute(f"DROP TABLE {row['relname']}")


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


async def _insert_access_logs(connection: asyncpg.Connection, now: datetime) -> dict[int, Any]:
    rows: dict[int, dict[str, Any]] = {}
    for number in range(330):
        row: dict[str, Any] = {
            "occurred_at": _when(now, number),
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
            "occurred_at": _when(now, number),
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
    """500 rows older than C (300 access logs, 200 data changes), 50 kept; each in the
    partition of its month (which the app's start-up would have made)."""
    now = datetime.now(UTC)
    async with db.transaction():
        rows = {
            ACCESS_LOGS: await _insert_access_logs(db, now),
            DATA_CHANGES: await _insert_data_changes(db, now),
        }
        await db.execute(f"SELECT {ENSURE_FUNCTION}()")
    seeded = Seeded(now=now, rows=rows)
    assert len(seeded.older_than(ACCESS_LOGS, seeded.cutoff)) == 300
    assert len(seeded.older_than(DATA_CHANGES, seeded.cutoff)) == 200
    assert await db.fetchval("SELECT count(*) FROM access_logs_default") == 0
    return seeded


async def _archive(
    database_url: str,
    output_dir: Path,
    seeded: Seeded,
    cutoff: datetime | None = None,
    **options: Any,
) -> Summary:
    arguments: dict[str, Any] = {
        "older_than": seeded.age(seeded.cutoff if cutoff is None else cutoff),
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


async def _partition_state(connection: asyncpg.Connection, name: str) -> str:
    """`attached`, `detached` (a table of its own) or `gone`."""
    attached = await connection.fetchval(
        "SELECT relispartition FROM pg_class WHERE oid = to_regclass($1)", f"public.{name}"
    )
    return {True: "attached", False: "detached", None: "gone"}[attached]


async def _assert_archived_exactly(
    connection: asyncpg.Connection, output_dir: Path, seeded: Seeded, cutoff: datetime
) -> None:
    """Every row older than `cutoff` is in exactly one file, with its values; every other row is
    still in its table; every file is recorded."""
    archived = _archived_rows(output_dir)
    for table in APPEND_ONLY_TABLES:
        old = seeded.older_than(table, cutoff)
        counts = Counter(row["id"] for row in archived[table])
        assert set(counts) == old
        assert all(count == 1 for count in counts.values())  # no row in two files
        assert {row["id"]: row for row in archived[table]} == {
            id_: seeded.rows[table][id_] for id_ in old
        }
        assert await _ids_in_database(connection, table) == seeded.rows[table].keys() - old
    await _assert_bookkeeping_matches_files(connection, output_dir)


async def test_round_trip_archives_exactly_the_old_rows_and_drops_the_whole_months(
    database_url: str, db: asyncpg.Connection, seeded: Seeded, tmp_path: Path
) -> None:
    summary = await _archive(database_url, tmp_path, seeded)

    await _assert_archived_exactly(db, tmp_path, seeded, seeded.cutoff)
    batches = await _assert_bookkeeping_matches_files(db, tmp_path)
    assert [
        (table.table, table.rows, table.files, table.partitions) for table in summary.tables
    ] == [
        (table, *seeded.expected(table, seeded.cutoff, BATCH_SIZE)) for table in APPEND_ONLY_TABLES
    ]
    assert [table.partitions for table in summary.tables] == [2, 2]
    assert [table.bytes for table in summary.tables] == [
        sum(batch["file_bytes"] for batch in batches if batch["table_name"] == table)
        for table in APPEND_ONLY_TABLES
    ]
    assert (summary.rows, summary.files) == (500, len(batches))
    assert summary.bytes == sum(batch["file_bytes"] for batch in batches)
    assert not summary.dry_run
    assert summary.output_dir == tmp_path
    for table in APPEND_ONLY_TABLES:
        states = [
            await _partition_state(db, partition_of(table, month_start(seeded.now, back)))
            for back in (4, 3, 2)
        ]
        assert states == ["gone", "gone", "attached"]


def _crash_while_writing_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second file written (of the first whole partition) never gets written."""
    write = archive_module._write_batch_file
    written: list[Path] = []

    def crash_on_the_second(path: Path, documents: list[str]) -> tuple[int, str]:
        if written:
            raise InterruptedRunError
        written.append(path)
        return write(path, documents)

    monkeypatch.setattr(archive_module, "_write_batch_file", crash_on_the_second)


def _crash_before_the_partition_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    async def crash(*_: object) -> None:
        raise InterruptedRunError

    monkeypatch.setattr(archive_module, "_commit_partition", crash)


@pytest.mark.parametrize("crash", [_crash_while_writing_files, _crash_before_the_partition_commit])
@pytest.mark.parametrize("resume", ["same-cutoff", "longer-retention", "nothing-old"])
async def test_crash_inside_a_whole_partition_then_resume_loses_and_duplicates_nothing(
    *,
    database_url: str,
    db: asyncpg.Connection,
    seeded: Seeded,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    crash: Callable[[pytest.MonkeyPatch], None],
    resume: str,
) -> None:
    """The run stops with the oldest month detached (and perhaps some of its files written):
    its rows are all still in the database. The next run puts the partition back under its
    table, whatever its cut-off: archived whole again, or kept by a longer retention."""
    first = partition_of(ACCESS_LOGS, month_start(seeded.now, 4))
    with monkeypatch.context() as patch:
        crash(patch)
        with pytest.raises(InterruptedRunError):
            await _archive(database_url, tmp_path, seeded)

    assert await _partition_state(db, first) == "detached"
    detached = {row["id"] for row in await db.fetch(f"SELECT id FROM {first}")}  # noqa: S608  # a test constant
    in_table = await _ids_in_database(db, ACCESS_LOGS)
    assert detached | in_table == seeded.rows[ACCESS_LOGS].keys()
    assert not detached & in_table
    assert await db.fetchval("SELECT count(*) FROM audit_archive_batches") == 0

    resume_cutoff = {
        "same-cutoff": seeded.cutoff,
        "longer-retention": seeded.long_cutoff,
        "nothing-old": month_start(seeded.now, 5),
    }[resume]
    await _archive(database_url, tmp_path, seeded, resume_cutoff)

    await _assert_archived_exactly(db, tmp_path, seeded, resume_cutoff)
    if resume == "nothing-old":
        assert await _partition_state(db, first) == "attached"
        assert _files(tmp_path) == {}
    # And the run with the first cut-off finishes the job.
    await _archive(database_url, tmp_path, seeded)
    await _assert_archived_exactly(db, tmp_path, seeded, seeded.cutoff)


async def test_crash_after_a_partition_and_in_the_row_path_then_resume(
    database_url: str,
    db: asyncpg.Connection,
    seeded: Seeded,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    committed: list[BatchResult] = []

    def interrupt_after_the_first_partition(batch: BatchResult) -> None:
        committed.append(batch)
        raise InterruptedRunError

    with pytest.raises(InterruptedRunError):
        await _archive(
            database_url, tmp_path, seeded, after_batch=interrupt_after_the_first_partition
        )
    # The oldest month is archived whole and gone; nothing else moved.
    first = partition_of(ACCESS_LOGS, month_start(seeded.now, 4))
    assert await _partition_state(db, first) == "gone"
    gone = {row["id"] for row in _archived_rows(tmp_path)[ACCESS_LOGS]}
    assert gone == seeded.in_month(ACCESS_LOGS, 4)
    assert await _ids_in_database(db, ACCESS_LOGS) == seeded.rows[ACCESS_LOGS].keys() - gone
    await _assert_bookkeeping_matches_files(db, tmp_path)

    async def crash_before_commit(*_: object) -> None:
        raise InterruptedRunError

    with monkeypatch.context() as patch:
        patch.setattr(archive_module, "_commit_batch", crash_before_commit)
        with pytest.raises(InterruptedRunError):
            await _archive(database_url, tmp_path, seeded)
    # Crashed after writing the row path's first file, before its transaction: the file is
    # there, unrecorded, and its rows are all still in the table.
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
    # That run had dropped the next whole month before its crash in the row path.
    done = await db.fetchval("SELECT sum(row_count) FROM audit_archive_batches")
    assert done == len(gone) + len(seeded.in_month(ACCESS_LOGS, 3))

    resumed = await _archive(database_url, tmp_path, seeded)

    await _assert_archived_exactly(db, tmp_path, seeded, seeded.cutoff)
    assert resumed.rows == 500 - done
    assert len(committed) == 1


async def _append(connection: asyncpg.Connection, occurred_at: datetime) -> int:
    """One more access log row, besides the seeded ones; its id."""
    row_id: int = await connection.fetchval(
        "INSERT INTO access_logs (occurred_at, request_id, method, path, status, duration_ms) "
        "VALUES ($1, 'extra', 'GET', '/extra', 200, 1) RETURNING id",
        occurred_at,
    )
    return row_id


async def test_a_row_arriving_for_a_detached_month_is_archived_by_the_row_path(
    database_url: str,
    db: asyncpg.Connection,
    seeded: Seeded,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a month is detached, a late row of that month goes to the DEFAULT partition, and
    the same run's row path archives it: nothing slips between the files and the drop."""
    commit = archive_module._commit_partition
    late: list[int] = []

    async def insert_a_late_row_first(
        connection: asyncpg.Connection, partition: str, batches: list[BatchResult]
    ) -> None:
        if not late:
            late.append(await _append(db, month_start(seeded.now, 4) + timedelta(days=1)))
        await commit(connection, partition, batches)

    monkeypatch.setattr(archive_module, "_commit_partition", insert_a_late_row_first)

    summary = await _archive(database_url, tmp_path, seeded, tables=[ACCESS_LOGS])

    archived = Counter(row["id"] for row in _archived_rows(tmp_path)[ACCESS_LOGS])
    old = seeded.older_than(ACCESS_LOGS, seeded.cutoff)
    assert set(archived) == old | set(late)
    assert set(archived.values()) == {1}
    assert summary.rows == len(old) + 1
    assert await _ids_in_database(db, ACCESS_LOGS) == seeded.rows[ACCESS_LOGS].keys() - old
    await _assert_bookkeeping_matches_files(db, tmp_path)


async def test_rows_of_the_default_partition_take_the_row_path(
    database_url: str,
    db: asyncpg.Connection,
    seeded: Seeded,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows no month partition covers (the run's own start-up would move them to a new one:
    here it is skipped) are archived row by row."""
    ancient = {
        await _append(db, datetime(2001, 1, 1, tzinfo=UTC) + timedelta(days=day))
        for day in range(3)
    }

    async def no_ensure(_: asyncpg.Connection) -> None:
        pass

    monkeypatch.setattr(archive_module, "_ensure_partitions", no_ensure)
    assert await db.fetchval("SELECT count(*) FROM access_logs_default") == 3

    await _archive(database_url, tmp_path, seeded, tables=[ACCESS_LOGS])

    archived = {row["id"] for row in _archived_rows(tmp_path)[ACCESS_LOGS]}
    assert archived == seeded.older_than(ACCESS_LOGS, seeded.cutoff) | ancient
    assert await db.fetchval("SELECT count(*) FROM access_logs_default") == 0
    assert await _partition_state(db, "access_logs_p2001_01") == "gone"


async def test_dry_run_reports_and_changes_nothing(
    database_url: str, db: asyncpg.Connection, seeded: Seeded, tmp_path: Path
) -> None:
    output_dir = tmp_path / "archive"

    summary = await _archive(database_url, output_dir, seeded, dry_run=True)

    assert summary.dry_run
    assert [
        (table.table, table.rows, table.files, table.partitions, table.bytes)
        for table in summary.tables
    ] == [
        (table, *seeded.expected(table, seeded.cutoff, BATCH_SIZE), 0)
        for table in APPEND_ONLY_TABLES
    ]
    assert summary.rows == 500
    assert not output_dir.exists()
    for table in APPEND_ONLY_TABLES:
        assert await _ids_in_database(db, table) == seeded.rows[table].keys()
        assert await _partition_state(db, partition_of(table, month_start(seeded.now, 4))) == (
            "attached"
        )
    assert await db.fetchval("SELECT count(*) FROM audit_archive_batches") == 0


async def test_a_run_with_nothing_old_is_a_no_op(
    database_url: str, db: asyncpg.Connection, seeded: Seeded, tmp_path: Path
) -> None:
    await _archive(database_url, tmp_path, seeded)
    files = {name: path.read_bytes() for name, path in _files(tmp_path).items()}

    summary = await _archive(database_url, tmp_path, seeded)

    assert [
        (table.table, table.rows, table.files, table.bytes, table.partitions)
        for table in summary.tables
    ] == [(table, 0, 0, 0, 0) for table in APPEND_ONLY_TABLES]
    assert (summary.rows, summary.files, summary.bytes) == (0, 0, 0)
    assert {name: path.read_bytes() for name, path in _files(tmp_path).items()} == files
    for table in APPEND_ONLY_TABLES:
        assert await _ids_in_database(db, table) == seeded.rows[table].keys() - (
            seeded.older_than(table, seeded.cutoff)
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
        await _archive(database_url, tmp_path, seeded)

    assert _files(tmp_path) == {stray.relative_to(tmp_path).as_posix(): stray}
    assert stray.read_bytes() == content
    for table in APPEND_ONLY_TABLES:
        assert await _ids_in_database(db, table) == seeded.rows[table].keys()
        assert await _partition_state(db, partition_of(table, month_start(seeded.now, 4))) == (
            "attached"
        )


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


def _days_with_a_margin(seeded: Seeded, around: int) -> int:
    """A retention in days near `around` whose cut-off is at least MARGIN from every row (the
    script's clock runs a few seconds behind the test's)."""
    instants = [row["occurred_at"] for rows in seeded.rows.values() for row in rows.values()]
    for days in sorted(range(around - 20, around + 20), key=lambda days: abs(days - around)):
        cutoff = seeded.now - timedelta(days=days)
        if all(abs(instant - cutoff) > MARGIN for instant in instants):
            return days
    raise AssertionError(f"no retention near {around} days keeps clear of the rows")


async def test_command_line_takes_its_defaults_from_the_settings_and_prints_a_summary(
    database_url: str,
    app_database_url: str,
    db: asyncpg.Connection,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    days = _days_with_a_margin(seeded, around=seeded.age(seeded.cutoff).days)
    env = {
        # The app's role may not delete audit rows: the script must use the owner's URL.
        "DATABASE_URL": app_database_url,
        "DATABASE_OWNER_URL": database_url,
        "AUDIT_RETENTION_DAYS": str(days),
        "AUDIT_ARCHIVE_DIR": str(tmp_path),
    }
    cutoff = seeded.now - timedelta(days=days)
    old = seeded.older_than(ACCESS_LOGS, cutoff)
    _, files, partitions = seeded.expected(ACCESS_LOGS, cutoff, 100)

    dry_run = await _run_script("--batch-size", "100", "--table", ACCESS_LOGS, "--dry-run", env=env)

    assert "Dry run, nothing changed" in dry_run
    assert (
        f"{ACCESS_LOGS}: {len(old)} rows in {files} files, {partitions} whole partitions\n"
        in dry_run
    )
    assert _files(tmp_path) == {}

    output = await _run_script("--batch-size", "100", "--table", ACCESS_LOGS, env=env)

    size = sum(path.stat().st_size for path in _files(tmp_path).values())
    assert f"to {tmp_path}\n" in output
    assert (
        f"{ACCESS_LOGS}: {len(old)} rows in {files} files, {size} bytes, "
        f"{partitions} partitions dropped\n"
    ) in output
    assert output.endswith(f"total: {len(old)} rows in {files} files, {size} bytes\n")
    assert DATA_CHANGES not in output
    assert await _ids_in_database(db, ACCESS_LOGS) == seeded.rows[ACCESS_LOGS].keys() - old
    assert await _ids_in_database(db, DATA_CHANGES) == seeded.rows[DATA_CHANGES].keys()
    await _assert_bookkeeping_matches_files(db, tmp_path)
