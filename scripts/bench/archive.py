"""Time the audit archive's old path (row-batch deletes from the unpartitioned table) against
the new one (whole month partitions detached and dropped), on the same rows.

    uv run python -m scripts.bench.archive [--rows 1000000] [--batch-size 5000] [--old-ref REF]

(`task bench-archive -- ...`.) One run: an embedded PostgreSQL of its own
(`.data/bench-archive-postgres`) with two databases, both seeded in SQL (generate_series) with
`--rows` access_logs rows spread evenly over the three calendar months before the current one:

- `archive_old`: migrated up to, not including, the partitioning migration; archived by the
  archive code of `--old-ref` (default: the commit before the one that added that migration),
  extracted with `git archive` into a temporary directory and put first on PYTHONPATH;
- `archive_new`: fully migrated (partitioned); archived by this checkout's code.

Each archives the two oldest months (the cut-off is the first instant of the last one) to a
temporary directory, in a process of its own, which reports its wall time (and the part of it
spent writing the files, the same work in both paths) and its peak resident memory
(`getrusage(RUSAGE_SELF).ru_maxrss`: the archiving Python process, its imports included, not
the PostgreSQL server). The table's size and dead rows afterwards, and the time of a VACUUM
then, show what each path leaves behind. Not part of the test suite: it takes minutes.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from backoffice.core.config import PROJECT_ROOT
from backoffice.core.database import libpq_url, start_embedded_postgres
from backoffice.core.migrations import (
    SUM_FILE,
    apply_migrations,
    compute_sum_file,
    read_migration_files,
)

PARTITIONING_MIGRATION = "20261202060000_partition_audit.sql"
DATA_DIR = PROJECT_ROOT / ".data" / "bench-archive-postgres"
MONTHS = 3
ARCHIVED_MONTHS = 2
# No row in the first and last minute of a month: the run's own clock sets its cut-off a few
# seconds after the month's first instant, and no row may fall in between.
_EDGE = timedelta(minutes=1)
_CUTOFF_AFTER_MONTH_START = timedelta(seconds=30)

# Run in a process of its own, with the archive code of one path first on sys.path.
_CHILD = """
import asyncio, json, resource, sys, time
from datetime import datetime, timedelta
from pathlib import Path
import backoffice.audit.archive as module
url, cutoff, batch_size, output_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# The time spent writing the files (serialising, compressing, fsync), the same in both paths.
writing = [0.0]
write = module._write_batch_file

def timed_write(*arguments):
    started = time.perf_counter()
    try:
        return write(*arguments)
    finally:
        writing[0] += time.perf_counter() - started

module._write_batch_file = timed_write

async def run():
    import asyncpg
    connection = await asyncpg.connect(url)
    now = await connection.fetchval("SELECT now()")
    await connection.close()
    started = time.perf_counter()
    summary = await module.archive(
        url, older_than=now - datetime.fromisoformat(cutoff), output_dir=Path(output_dir),
        batch_size=batch_size, tables=("access_logs",), progress=False,
    )
    return summary, time.perf_counter() - started

summary, seconds = asyncio.run(run())
print(json.dumps({
    "code": module.__file__, "rows": summary.rows, "files": summary.files,
    "bytes": summary.bytes, "seconds": seconds, "writing_seconds": writing[0],
    "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
}))
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    path: str
    rows: int
    files: int
    seconds: float
    writing_seconds: float
    peak_rss_mb: float
    rows_left: int
    table_mb: float
    dead_rows: int
    vacuum_seconds: float


def _month_start(instant: datetime, back: int) -> datetime:
    year, month = divmod(instant.year * 12 + instant.month - 1 - back, 12)
    return datetime(year, month + 1, 1, tzinfo=UTC)


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=PROJECT_ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def _default_old_ref() -> str:
    """The commit before the one that added the partitioning migration (HEAD if none did)."""
    added = _git(
        "log", "-n1", "--format=%H", "--diff-filter=A", "--", f"migrations/{PARTITIONING_MIGRATION}"
    )
    return f"{added}^" if added else "HEAD"


def _extract_source(ref: str, into: Path) -> Path:
    """`src/` as of `ref`, without touching the repository's worktrees."""
    into.mkdir()
    archive = into / "source.tar"
    with archive.open("wb") as file:
        subprocess.run(["git", "archive", ref, "src"], cwd=PROJECT_ROOT, check=True, stdout=file)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _old_migrations(into: Path) -> Path:
    """The project's migrations up to, not including, the partitioning one."""
    directory = into / "migrations"
    directory.mkdir()
    for path in (PROJECT_ROOT / "migrations").glob("*.sql"):
        if path.name < PARTITIONING_MIGRATION:
            shutil.copy(path, directory / path.name)
    (directory / SUM_FILE).write_text(compute_sum_file(read_migration_files(directory)))
    return directory


async def _admin(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _seed(url: str, rows: int, now: datetime) -> None:
    """`rows` access_logs rows, a third in each of the three months before the current one,
    spread evenly inside each month (its first and last minute left empty). Partitioned, the
    months' partitions are made first, as they would have been ahead of time."""
    per_month = -(-rows // MONTHS)
    connection = await asyncpg.connect(libpq_url(url))
    try:
        partitioned = await connection.fetchval("SELECT to_regproc('audit_attach_month')")
        for back in range(MONTHS, 0, -1):
            start, end = _month_start(now, back), _month_start(now, back - 1)
            if partitioned:
                await connection.execute(
                    "SELECT audit_attach_month('access_logs', $1)", start.replace(tzinfo=None)
                )
            count = min(per_month, rows - per_month * (MONTHS - back))
            await connection.execute(
                """INSERT INTO access_logs (occurred_at, request_id, user_id, client_ip,
                                            user_agent, method, path, status, duration_ms)
                SELECT $1::timestamptz + ($2::timestamptz - $1::timestamptz) * (n::float8 / $3),
                       'req-' || md5(n::text),
                       nullif(n % 50, 0), '10.0.0.0'::inet + (n % 65536),
                       'bench-agent/1.0 (X11; Linux x86_64)', 'GET',
                       '/api/v1/products/' || (n % 10000), (ARRAY[200, 201, 404, 422])[1 + n % 4],
                       (n % 1000) / 10.0
                FROM generate_series(1, $3::integer) AS n""",
                start + _EDGE,
                end - _EDGE,
                count,
            )
        await connection.execute("VACUUM ANALYZE access_logs")
    finally:
        await connection.close()


# access_logs and its partitions, if any (pg_partition_tree lists nothing for a plain table).
_RELATIONS = (
    "SELECT relid FROM pg_partition_tree('access_logs') "
    "UNION SELECT 'access_logs'::regclass AS relid"
)


async def _table_state(url: str) -> tuple[int, float, int, float]:
    """Rows left, total size in MB (partitions included) and dead rows of access_logs, and
    the time of the VACUUM that the dead rows call for (which the row path leaves to
    autovacuum, on top of its own time)."""
    connection = await asyncpg.connect(libpq_url(url))
    try:
        await connection.execute("ANALYZE access_logs")
        await asyncio.sleep(1)  # the statistics collector's counters settle
        rows = await connection.fetchval("SELECT count(*) FROM access_logs")
        size = await connection.fetchval(
            f"SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM ({_RELATIONS}) AS r"  # noqa: S608  # a constant
        )
        dead = await connection.fetchval(
            "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables "  # noqa: S608  # a constant
            f"WHERE relid IN ({_RELATIONS})"
        )
        started = time.perf_counter()
        await connection.execute("VACUUM access_logs")
        vacuum_seconds = time.perf_counter() - started
    finally:
        await connection.close()
    return int(rows), size / 2**20, int(dead), vacuum_seconds


def _archive_in_a_process(
    source: Path, url: str, cutoff: datetime, batch_size: int, output_dir: Path
) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            libpq_url(url),
            cutoff.isoformat(),
            str(batch_size),
            str(output_dir),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(source)},
        check=True,
        capture_output=True,
        text=True,
    )
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


async def _measure(
    path: str, source: Path, url: str, *, cutoff: datetime, batch_size: int, work: Path
) -> Outcome:
    output_dir = work / f"archive-{path}"
    child = await asyncio.to_thread(
        _archive_in_a_process, source, url, cutoff, batch_size, output_dir
    )
    if not Path(child["code"]).is_relative_to(source):  # the installed package ran instead
        raise RuntimeError(f"{path}: ran {child['code']}, not the code under {source}")
    rows_left, table_mb, dead_rows, vacuum_seconds = await _table_state(url)
    return Outcome(
        path=path,
        rows=child["rows"],
        files=child["files"],
        seconds=child["seconds"],
        writing_seconds=child["writing_seconds"],
        peak_rss_mb=child["peak_rss_kb"] / 1024,
        rows_left=rows_left,
        table_mb=table_mb,
        dead_rows=dead_rows,
        vacuum_seconds=vacuum_seconds,
    )


def _render(
    outcomes: list[Outcome], rows: int, batch_size: int, cutoff: datetime, old_ref: str
) -> str:
    lines = [
        f"access_logs: {rows:,} rows over {MONTHS} months; archiving the {ARCHIVED_MONTHS} oldest "
        f"(cut-off {cutoff:%Y-%m-%d %H:%M:%S} UTC), batches of {batch_size:,} rows",
        f"old: row-batch deletes from the unpartitioned table, the archive code of {old_ref}",
        "new: whole month partitions detached, archived and dropped, this checkout's code",
        "",
        "| path | rows archived | files | seconds | of which writing files | peak RSS (MB) "
        "| rows left | table after (MB) | dead rows after | VACUUM after (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {o.path} | {o.rows:,} | {o.files} | {o.seconds:.1f} | {o.writing_seconds:.1f} "
        f"| {o.peak_rss_mb:.0f} | "
        f"{o.rows_left:,} | {o.table_mb:.0f} | {o.dead_rows:,} | {o.vacuum_seconds:.1f} |"
        for o in outcomes
    ]
    return "\n".join(lines)


async def _run(arguments: argparse.Namespace) -> str:
    server = await asyncio.to_thread(start_embedded_postgres, DATA_DIR, "postgres")
    now = datetime.now(UTC)
    cutoff = _month_start(now, MONTHS - ARCHIVED_MONTHS) + _CUTOFF_AFTER_MONTH_START
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as temporary:
        work = Path(temporary)
        old_ref = _git("rev-parse", "--short", arguments.old_ref or _default_old_ref())
        old_source = _extract_source(old_ref, work / "old")
        databases = {"old": "archive_old", "new": "archive_new"}
        migrations = {"old": _old_migrations(work), "new": PROJECT_ROOT / "migrations"}
        sources = {"old": old_source, "new": PROJECT_ROOT / "src"}
        outcomes = []
        for path, name in databases.items():
            await _admin(server, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
            url = server.replace("/postgres?", f"/{name}?")
            await apply_migrations(url, migrations[path])
            print(f"{path}: seeding {arguments.rows:,} rows", file=sys.stderr)
            await _seed(url, arguments.rows, now)
            print(f"{path}: archiving", file=sys.stderr)
            outcomes.append(
                await _measure(
                    path,
                    sources[path],
                    url,
                    cutoff=cutoff,
                    batch_size=arguments.batch_size,
                    work=work,
                )
            )
            await _admin(server, f'DROP DATABASE "{name}" WITH (FORCE)')
    return _render(outcomes, arguments.rows, arguments.batch_size, cutoff, old_ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--old-ref", help="git ref of the old archive code (default: see above)")
    arguments = parser.parse_args()
    print(asyncio.run(_run(arguments)))


if __name__ == "__main__":
    main()
