"""The audit archive: rows older than the retention period move to gzip-compressed JSON Lines
files, then out of the database. `scripts/archive_audit.py` (`task audit-archive`) is its
command line; docs/AUDIT_GUIDE.md describes the guarantees.

The audit tables are partitioned by month (audit/partitions.py). A month partition lying
entirely before the cut-off goes whole: it is detached from its table (so nothing can be added
to it any more: a late row of that month lands in the DEFAULT partition), its rows are written to
files batch by batch, and one transaction records every file in `audit_archive_batches` and drops
the partition, after checking that it holds exactly the rows written. The partition that
straddles the cut-off and the DEFAULT partition take the row path: each batch of rows is written
to its own file, then deleted, in the one transaction that also records the file. Files are
always written atomically (a temporary file, fsync, rename). So a crash loses nothing and
duplicates nothing:

- before a commit, the rows are still in the database (in a detached partition, perhaps), and
  the files (if any) have no bookkeeping row. The next run re-attaches such a partition (with the
  rows that reached the DEFAULT partition meanwhile), deletes such files (after checking that
  every row in them is still in the table) and archives those rows again;
- after a commit, the batch or the partition is complete: its rows are gone and its files are
  recorded.

Re-running therefore resumes where a crashed or interrupted run stopped. Every file is
`<table>/<table>-<first id>-<last id>.jsonl.gz`, one JSON object per row and line (every column,
keys sorted, timestamps in ISO 8601 UTC, JSONB as objects, INET as text).
"""

import asyncio
import gzip
import hashlib
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import asyncpg
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from backoffice.audit.models import APPEND_ONLY_TABLES, RETENTION_SETTING, AuditArchiveBatch
from backoffice.audit.partitions import ATTACH_FUNCTION, ENSURE_FUNCTION
from backoffice.core.database import libpq_url

DEFAULT_BATCH_SIZE = 5000
ALL_TABLES = "all"
_BOOKKEEPING_TABLE = AuditArchiveBatch.__tablename__
# Held for the whole run: two archivers would pick the same batches, and one could take the
# other's file for an unfinished one and delete it between its write and its commit.
_ADVISORY_LOCK_ID = 0x61756469745F6172  # "audit_ar"
_FILE_NAME = re.compile(r"(?P<table>[a-z_]+)-(?P<first>\d{12})-(?P<last>\d{12})\.jsonl\.gz")
_TEMPORARY_SUFFIX = ".tmp"
# DETACH takes an ACCESS EXCLUSIVE lock on the table for an instant; waiting long for it would
# queue every insert behind the wait (a long audit read holds the table), so each attempt gives
# up soon and the run tries again a little later.
_DETACH_LOCK_TIMEOUT = "2s"
_DETACH_ATTEMPTS = 5
_DETACH_RETRY_S = 1.0


class ArchiveError(RuntimeError):
    """The archive and the database disagree, or another run is active: nothing was lost, but
    the run stopped rather than guess. The message says what to check."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One committed batch: its rows are deleted and its file is recorded."""

    table: str
    first_id: int
    last_id: int
    row_count: int
    file_name: str  # relative to the output directory
    file_bytes: int
    sha256: str


@dataclass(slots=True)
class TableSummary:
    """Rows and files of one table: archived, or in a dry run, to be archived."""

    table: str
    rows: int = 0
    files: int = 0
    bytes: int = 0
    partitions: int = 0  # whole month partitions, detached and dropped

    def line(self, *, dry_run: bool) -> str:
        if dry_run:
            return (
                f"  {self.table}: {self.rows} rows in {self.files} files, "
                f"{self.partitions} whole partitions"
            )
        return (
            f"  {self.table}: {self.rows} rows in {self.files} files, {self.bytes} bytes, "
            f"{self.partitions} partitions dropped"
        )


@dataclass(slots=True)
class Summary:
    cutoff: datetime
    output_dir: Path
    batch_size: int
    dry_run: bool
    tables: list[TableSummary] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)

    @property
    def files(self) -> int:
        return sum(table.files for table in self.tables)

    @property
    def bytes(self) -> int:
        return sum(table.bytes for table in self.tables)

    def render(self) -> str:
        """The report printed at the end of a run."""
        cutoff = f"rows older than {self.cutoff.isoformat(timespec='seconds')}"
        if self.dry_run:
            lines = [
                f"Dry run, nothing changed: {cutoff} would be archived to {self.output_dir} "
                f"in batches of {self.batch_size}"
            ]
            lines += [table.line(dry_run=True) for table in self.tables]
            lines.append(f"  total: {self.rows} rows in {self.files} files")
        else:
            lines = [f"Archived {cutoff} to {self.output_dir}"]
            lines += [table.line(dry_run=False) for table in self.tables]
            lines.append(f"  total: {self.rows} rows in {self.files} files, {self.bytes} bytes")
        return "\n".join(lines)


def batch_file_name(table: str, first_id: int, last_id: int) -> str:
    """The file of a batch, relative to the output directory. Named by its ids only, so a batch
    re-archived after a crash lands on the same name."""
    return f"{table}/{table}-{first_id:012d}-{last_id:012d}.jsonl.gz"


def _fsync_directory(directory: Path) -> None:
    """Make a rename or a new entry in `directory` durable: the rows are deleted right after, so
    a power cut must not be able to take the file's name away."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_batch_file(path: Path, documents: Sequence[str]) -> tuple[int, str]:
    """Write the rows (PostgreSQL JSON text, one per row) as gzip-compressed JSON Lines,
    atomically, and return the file's size and SHA-256. The content depends on the rows only
    (sorted keys, no gzip timestamp), so rewriting a batch gives the same bytes."""
    lines = b"".join(
        orjson.dumps(orjson.loads(document), option=orjson.OPT_SORT_KEYS) + b"\n"
        for document in documents
    )
    data = gzip.compress(lines, mtime=0)
    temporary = path.with_name(path.name + _TEMPORARY_SUFFIX)
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
    _fsync_directory(path.parent)
    return len(data), hashlib.sha256(data).hexdigest()


def _ids_in(path: Path) -> list[int]:
    return [
        int(orjson.loads(line)["id"]) for line in gzip.decompress(path.read_bytes()).splitlines()
    ]


async def _count_old(connection: asyncpg.Connection, table: str, cutoff: datetime) -> int:
    count = await connection.fetchval(
        f"SELECT count(*) FROM {table} WHERE occurred_at < $1",  # noqa: S608  # table checked against APPEND_ONLY_TABLES
        cutoff,
    )
    return int(count)


async def _discard_uncommitted_files(
    connection: asyncpg.Connection, output_dir: Path, table: str
) -> None:
    """Delete what a crashed run left behind: temporary files, and batch files that were written
    but never committed (no bookkeeping row). The rows of such a file were not deleted, so they
    are archived again; a re-run may batch them differently (its cut-off is later), which is why
    the old file must go rather than wait to be overwritten. A file whose rows are not all in
    the table any more is something else (another database's archive?): stop, touch nothing."""
    table_dir = output_dir / table
    if not table_dir.is_dir():
        return
    for temporary in table_dir.glob(f"*{_TEMPORARY_SUFFIX}"):
        temporary.unlink()
    candidates = {
        f"{table}/{path.name}": path
        for path in table_dir.iterdir()
        if (match := _FILE_NAME.fullmatch(path.name)) and match["table"] == table
    }
    if not candidates:
        return
    recorded = await connection.fetch(
        f"SELECT file_name FROM {_BOOKKEEPING_TABLE} WHERE file_name = ANY($1::text[])",  # noqa: S608  # a constant
        list(candidates),
    )
    for file_name in candidates.keys() - {record["file_name"] for record in recorded}:
        path = candidates[file_name]
        ids = await asyncio.to_thread(_ids_in, path)
        present = await connection.fetchval(
            f"SELECT count(*) FROM {table} WHERE id = ANY($1::bigint[])",  # noqa: S608  # table checked
            ids,
        )
        if present != len(ids):
            raise ArchiveError(
                f"{path} is not recorded in {_BOOKKEEPING_TABLE}, and {len(ids) - present} of its "
                f"{len(ids)} rows are not in {table}: it is not an unfinished batch of this "
                "database. Move it out of the archive directory and run again."
            )
        path.unlink()


async def _record(connection: asyncpg.Connection, batches: Sequence[BatchResult]) -> None:
    """Record the batches' files, inside the caller's transaction. A file already recorded
    whose rows are still here means the bookkeeping and the table disagree: stop."""
    try:
        await connection.executemany(
            f"INSERT INTO {_BOOKKEEPING_TABLE} "  # noqa: S608  # a constant
            "(table_name, first_id, last_id, row_count, file_name, file_bytes, sha256) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (
                    batch.table,
                    batch.first_id,
                    batch.last_id,
                    batch.row_count,
                    batch.file_name,
                    batch.file_bytes,
                    batch.sha256,
                )
                for batch in batches
            ],
        )
    except asyncpg.UniqueViolationError as exc:
        raise ArchiveError(
            f"a file of {batches[0].table} ({exc.detail}) is already recorded in "
            f"{_BOOKKEEPING_TABLE}, yet its rows are still in the database (restored from a "
            "backup?): nothing was deleted; compare the file with the rows before going on."
        ) from exc


async def _commit_batch(connection: asyncpg.Connection, batch: BatchResult, ids: list[int]) -> None:
    """Record the batch's file and delete exactly its rows, in one transaction: either both
    happen or neither does. The setting is what lets this transaction past the append-only
    trigger; SET LOCAL ends with the transaction."""
    async with connection.transaction():
        await connection.execute(f"SET LOCAL {RETENTION_SETTING} = 'on'")
        await _record(connection, [batch])
        deleted = await connection.fetchval(
            f"WITH deleted AS (DELETE FROM {batch.table} WHERE id = ANY($1::bigint[]) RETURNING 1) "  # noqa: S608  # table checked
            "SELECT count(*) FROM deleted",
            ids,
        )
        if deleted != batch.row_count:
            raise ArchiveError(
                f"deleting the {batch.row_count} rows of {batch.file_name} deleted {deleted}: "
                "rolled back, nothing was deleted."
            )


async def _write_batch(
    table: str, rows: Sequence[asyncpg.Record], output_dir: Path
) -> tuple[BatchResult, list[int]]:
    """Write `rows` (id, document), in id order, to their batch file; the batch and its ids."""
    ids = [int(row["id"]) for row in rows]
    file_name = batch_file_name(table, ids[0], ids[-1])
    path = output_dir / file_name
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True)
        _fsync_directory(path.parent.parent)
    file_bytes, sha256 = await asyncio.to_thread(
        _write_batch_file, path, [row["document"] for row in rows]
    )
    batch = BatchResult(
        table=table,
        first_id=ids[0],
        last_id=ids[-1],
        row_count=len(ids),
        file_name=file_name,
        file_bytes=file_bytes,
        sha256=sha256,
    )
    return batch, ids


@dataclass(slots=True)
class _Run:
    """What one table's archiving needs at every step, and what it reports after each commit."""

    connection: asyncpg.Connection
    table: str
    cutoff: datetime
    output_dir: Path
    batch_size: int
    summary: TableSummary
    advance: Callable[[int], None]
    after_batch: Callable[[BatchResult], None] | None

    def committed(self, batch: BatchResult) -> None:
        self.summary.rows += batch.row_count
        self.summary.files += 1
        self.summary.bytes += batch.file_bytes
        self.advance(batch.row_count)
        if self.after_batch is not None:
            self.after_batch(batch)


async def _archive_rows(run: _Run) -> None:
    """The row path (the partition straddling the cut-off, the DEFAULT partition): the
    table's old rows batch by batch, in id order. Keyset on id: a batch is never read twice in
    one run, and rows whose ids were taken before this run but which commit during it (behind
    the keyset) wait for the next run."""
    last_id = 0
    while rows := await run.connection.fetch(
        f"SELECT id, to_jsonb(t)::text AS document FROM {run.table} AS t "  # noqa: S608  # table checked
        "WHERE occurred_at < $1 AND id > $2 ORDER BY id LIMIT $3",
        run.cutoff,
        last_id,
        run.batch_size,
    ):
        batch, ids = await _write_batch(run.table, rows, run.output_dir)
        await _commit_batch(run.connection, batch, ids)
        run.committed(batch)
        last_id = ids[-1]


async def _whole_partitions(
    connection: asyncpg.Connection, table: str, cutoff: datetime
) -> list[str]:
    """The month partitions of `table` lying entirely before `cutoff`, oldest first (the
    DEFAULT partition has no upper bound: never whole)."""
    rows = await connection.fetch(
        """
        SELECT partition FROM (
          SELECT child.relname::text AS partition,
                 (regexp_match(pg_get_expr(child.relpartbound, child.oid),
                               'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper_bound
          FROM pg_inherits JOIN pg_class child ON child.oid = pg_inherits.inhrelid
          WHERE pg_inherits.inhparent = $1::regclass AND child.relkind = 'r'
        ) AS bounds
        WHERE upper_bound <= $2 ORDER BY upper_bound""",
        table,
        cutoff,
    )
    return [row["partition"] for row in rows]


async def _count_whole_partitions(
    connection: asyncpg.Connection, table: str, cutoff: datetime
) -> list[int]:
    """The rows of each month partition of `table` entirely before `cutoff`."""
    return [
        int(await connection.fetchval(f"SELECT count(*) FROM {partition}"))  # noqa: S608  # from the catalog
        for partition in await _whole_partitions(connection, table, cutoff)
    ]


async def _adopt_detached(connection: asyncpg.Connection, table: str) -> None:
    """Re-attach the partitions a crashed run detached and did not drop, with the rows of their
    month that reached the DEFAULT partition meanwhile: from then on they are archived (or kept,
    under a longer retention) like any other."""
    await connection.execute(
        f"SELECT {ATTACH_FUNCTION}($1, to_date(right(relname, 7), 'YYYY_MM')::timestamp, true) "  # noqa: S608  # a constant
        "FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' "
        "AND NOT relispartition AND relname ~ ('^' || $1 || '_p[0-9]{4}_[0-9]{2}$')",
        table,
    )


async def _detach(connection: asyncpg.Connection, table: str, partition: str) -> None:
    """Detach the partition: from now on nothing can be added to it (a row of its month would
    go to the DEFAULT partition), so the files can hold exactly its rows."""
    for attempt in range(1, _DETACH_ATTEMPTS + 1):
        try:
            async with connection.transaction():
                await connection.execute(f"SET LOCAL lock_timeout = '{_DETACH_LOCK_TIMEOUT}'")
                await connection.execute(f"ALTER TABLE {table} DETACH PARTITION {partition}")
        except asyncpg.LockNotAvailableError as exc:
            if attempt == _DETACH_ATTEMPTS:
                raise ArchiveError(
                    f"could not lock {table} to detach {partition} ({_DETACH_ATTEMPTS} attempts): "
                    "a long transaction holds it; nothing was changed, run again later."
                ) from exc
            await asyncio.sleep(_DETACH_RETRY_S * attempt)
        else:
            return


async def _commit_partition(
    connection: asyncpg.Connection, partition: str, batches: Sequence[BatchResult]
) -> None:
    """Record every file of the (detached) partition and drop it, in one transaction, once it
    is checked to hold exactly the rows written: either all of it happens or none does."""
    written = sum(batch.row_count for batch in batches)
    async with connection.transaction():
        present = await connection.fetchval(f"SELECT count(*) FROM {partition}")  # noqa: S608  # from the catalog
        if present != written:
            raise ArchiveError(
                f"{partition} holds {present} rows but {written} were written to files: "
                "rolled back, nothing was dropped (the next run starts it again)."
            )
        if batches:
            await _record(connection, batches)
        await connection.execute(f"DROP TABLE {partition}")


async def _archive_partition(run: _Run, partition: str) -> None:
    """The partition path: a whole month, detached, written to files, recorded, dropped."""
    await _detach(run.connection, run.table, partition)
    batches: list[BatchResult] = []
    last_id = 0
    while rows := await run.connection.fetch(
        f"SELECT id, to_jsonb(t)::text AS document FROM {partition} AS t "  # noqa: S608  # from the catalog
        "WHERE id > $1 ORDER BY id LIMIT $2",
        last_id,
        run.batch_size,
    ):
        batch, ids = await _write_batch(run.table, rows, run.output_dir)
        batches.append(batch)
        last_id = ids[-1]
    await _commit_partition(run.connection, partition, batches)
    run.summary.partitions += 1
    for batch in batches:
        run.committed(batch)


async def _archive_table(run: _Run) -> None:
    """What a crashed run left first, then the whole partitions, then the rows left."""
    await _adopt_detached(run.connection, run.table)
    await _discard_uncommitted_files(run.connection, run.output_dir, run.table)
    for partition in await _whole_partitions(run.connection, run.table, run.cutoff):
        await _archive_partition(run, partition)
    await _archive_rows(run)


async def _ensure_partitions(connection: asyncpg.Connection) -> None:
    await connection.execute(f"SELECT {ENSURE_FUNCTION}()")


async def _dry_run(
    connection: asyncpg.Connection, table: str, cutoff: datetime, batch_size: int
) -> TableSummary:
    """What a run would archive: each whole partition in files of its own, then the rest."""
    partitions = await _count_whole_partitions(connection, table, cutoff)
    rest = await _count_old(connection, table, cutoff) - sum(partitions)
    files = sum(math.ceil(rows / batch_size) for rows in [*partitions, rest])
    return TableSummary(table, rows=sum(partitions) + rest, files=files, partitions=len(partitions))


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


async def archive(
    url: str,
    *,
    older_than: timedelta,
    output_dir: Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    tables: Sequence[str] = APPEND_ONLY_TABLES,
    dry_run: bool = False,
    progress: bool = True,
    after_batch: Callable[[BatchResult], None] | None = None,
) -> Summary:
    """Archive, then delete, the rows of `tables` that occurred more than `older_than` ago.

    The cut-off is taken once, from the database's clock, so a run ends even while new rows
    keep coming. The run first makes the coming months' partitions (and moves the DEFAULT
    partition's rows to theirs), as the app does at start-up. `after_batch` is called after each
    committed batch (those of a whole partition once it is dropped). A dry run only counts: it
    changes nothing and writes nothing. The progress bar goes to stderr, when it is a terminal.
    """
    unknown = set(tables) - set(APPEND_ONLY_TABLES)
    if unknown:
        raise ValueError(f"not audit tables: {', '.join(sorted(unknown))}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    connection = await asyncpg.connect(libpq_url(url), server_settings={"timezone": "UTC"})
    try:
        cutoff: datetime = await connection.fetchval("SELECT now() - $1::interval", older_than)
        summary = Summary(
            cutoff=cutoff, output_dir=output_dir, batch_size=batch_size, dry_run=dry_run
        )
        if dry_run:
            for table in tables:
                summary.tables.append(await _dry_run(connection, table, cutoff, batch_size))
            return summary
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", _ADVISORY_LOCK_ID):
            raise ArchiveError("another archive run is in progress on this database")
        await _ensure_partitions(connection)
        with _progress_bar(progress and sys.stderr.isatty()) as bar:
            for table in tables:
                task = bar.add_task(table, total=await _count_old(connection, table, cutoff))
                table_summary = TableSummary(table)
                summary.tables.append(table_summary)
                await _archive_table(
                    _Run(
                        connection,
                        table,
                        cutoff=cutoff,
                        output_dir=output_dir,
                        batch_size=batch_size,
                        summary=table_summary,
                        advance=partial(bar.advance, task),
                        after_batch=after_batch,
                    )
                )
        return summary
    finally:
        await connection.close()  # also releases the advisory lock
