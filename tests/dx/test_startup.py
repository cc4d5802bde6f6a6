"""What a start does, once, on its way to serving: `python -m backoffice run` starts (or joins)
the embedded PostgreSQL and migrates it once, not once per step, and a migration check with
nothing pending takes no lock (the start-up time, scripts/bench/startup.py, is the bench's
business, not a test's)."""

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
import httpx

from backoffice.core.database import libpq_url
from backoffice.core.migrations import _ADVISORY_LOCK_ID, apply_migrations
from tests.live_server import free_port, server_environment, server_process, wait_until_ready

STOP_TIMEOUT_S = 60.0


async def test_run_starts_and_migrates_the_embedded_database_once(tmp_path: Path) -> None:
    port = free_port()
    environment = server_environment(
        EMBEDDED_DB_DIR=str(tmp_path / "pg"),
        HOST="127.0.0.1",
        PORT=str(port),
        ENVIRONMENT="development",
        LOG_LEVEL="INFO",
    )
    log = tmp_path / "run.log"
    with server_process("run", environment, tmp_path, log) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await wait_until_ready(server, client, log)
        os.killpg(server.pid, signal.SIGINT)
        assert server.wait(STOP_TIMEOUT_S) == 0
    output = log.read_text(errors="replace")

    # Before: once to migrate, once more for the app's URL, a third time in the app's start-up.
    assert output.count("database.embedded_started") == 1, output
    assert output.count("migrations applied:") == 1, output
    assert "bootstrap: created" in output, output
    assert "database.embedded_stopped" in output, output


async def test_a_start_with_nothing_pending_neither_waits_for_the_migration_lock(
    database_url: str, migrations_dir: Path
) -> None:
    """Another process holding the lock (migrating, or stuck) does not hold up a start that has
    nothing to apply: the check reads the revisions table only."""
    holder = await asyncpg.connect(libpq_url(database_url))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_ID)
        async with asyncio.timeout(10):
            assert await apply_migrations(database_url, migrations_dir) == []
    finally:
        await holder.close()
