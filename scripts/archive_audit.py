"""Move audit rows older than the retention period to gzip-compressed JSON Lines files, then
out of the database (whole month partitions detached and dropped, the rest deleted batch by
batch): the command line of `backoffice.audit.archive`, which says how a crash loses nothing and
duplicates nothing.

    uv run python scripts/archive_audit.py [--older-than-days 90] [--output-dir DIR]
        [--batch-size 5000] [--table access_logs|data_changes|all] [--dry-run]

Runs as the database owner, the only role that may delete audit rows: DATABASE_OWNER_URL, else
DATABASE_URL, else the embedded PostgreSQL's superuser (started and migrated first). The
defaults come from AUDIT_RETENTION_DAYS and AUDIT_ARCHIVE_DIR.
"""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from backoffice.audit.archive import (
    ALL_TABLES,
    DEFAULT_BATCH_SIZE,
    ArchiveError,
    Summary,
    archive,
)
from backoffice.audit.models import APPEND_ONLY_TABLES
from backoffice.core.config import Settings, get_settings
from backoffice.core.database import owner_database_url, prepare_embedded_database


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _parse_args(settings: Settings, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--older-than-days",
        type=_positive,
        default=settings.audit_retention_days,
        help="archive rows older than this many days (default: %(default)s, AUDIT_RETENTION_DAYS)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=settings.audit_archive_dir,
        help="directory of the archive files (default: %(default)s, AUDIT_ARCHIVE_DIR)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=DEFAULT_BATCH_SIZE,
        help="rows per file (default: %(default)s)",
    )
    parser.add_argument(
        "--table",
        choices=[*APPEND_ONLY_TABLES, ALL_TABLES],
        default=ALL_TABLES,
        help="which audit table to archive (default: %(default)s)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be archived, change nothing"
    )
    return parser.parse_args(argv)


async def _run(settings: Settings, arguments: argparse.Namespace) -> Summary:
    if settings.database_url is None and settings.database_owner_url is None:
        await prepare_embedded_database(settings)  # started and migrated
    # Deleting audit rows is the owner's right alone: the app's role may only append.
    url = await asyncio.to_thread(owner_database_url, settings)
    return await archive(
        url,
        older_than=timedelta(days=arguments.older_than_days),
        output_dir=arguments.output_dir.resolve(),
        batch_size=arguments.batch_size,
        tables=APPEND_ONLY_TABLES if arguments.table == ALL_TABLES else (arguments.table,),
        dry_run=arguments.dry_run,
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = get_settings()
    arguments = _parse_args(settings, argv)
    try:
        summary = asyncio.run(_run(settings, arguments))
    except ArchiveError as exc:
        sys.exit(f"archive_audit: {exc}")
    print(summary.render())


if __name__ == "__main__":
    main()
