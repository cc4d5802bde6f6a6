"""Rewrite `migrations/atlas.sum` as `atlas migrate hash` would (for machines without Atlas)."""

from backoffice.core.config import get_settings
from backoffice.core.migrations import SUM_FILE, compute_sum_file, read_migration_files


def main() -> None:
    directory = get_settings().migrations_dir
    (directory / SUM_FILE).write_text(compute_sum_file(read_migration_files(directory)))
    print(f"wrote {directory / SUM_FILE}")


if __name__ == "__main__":
    main()
