"""Command line: `python -m backoffice {run,serve,migrate,unlock-user,purge-tokens}`.

`run` and `serve` prepare the database first (starting the embedded PostgreSQL and applying
migrations as its owner when DATABASE_URL is unset), then hand the app role's URL to uvicorn's
workers.

Ctrl-C (SIGINT) and SIGTERM stop any command cleanly, with no traceback: a serving server
finishes uvicorn's graceful shutdown, then the embedded PostgreSQL this process started or
joined is stopped if no other process uses it (core/embedded.py) and EMBEDDED_DB_KEEP_RUNNING
is off. Further signals during the stop are ignored, so it is never cut short. `run` and
`serve` then exit 0: a server told to stop has done its job, for `task` (which reports any
other status as a failure) as for a process manager. The one-shot commands exit 128 + the
signal's number, as a shell reports an interrupted command: their work may be unfinished.
"""

import argparse
import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.audit import changes
from backoffice.auth.bootstrap import ensure_defaults
from backoffice.auth.retention import PurgeResult, purge_expired_tokens
from backoffice.auth.service import unlock_account_by_email
from backoffice.core import embedded
from backoffice.core.config import Settings, get_settings, settings_problems
from backoffice.core.database import (
    EMBEDDED_APP_LOGIN,
    Database,
    app_database_url,
    ensure_login_role,
    owner_database_url,
    with_user,
)
from backoffice.core.errors import database_unavailable, describe_error
from backoffice.core.metrics import MULTIPROC_DIR_ENV, prepare_multiprocess_dir
from backoffice.core.migrations import apply_migrations

APP = "backoffice.core.main:create_app"


async def _on_database[T](url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    """`work` on an engine of its own, disposed afterwards, for the commands. Their writes
    are recorded in the audit trail as the app's are."""
    settings = get_settings()
    database = Database.connect(url, settings, session_class=changes.session_class(settings))
    try:
        return await work(database)
    finally:
        await database.dispose()


async def _in_transaction[T](url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`work` in one committed transaction on a connection of its own, for the commands."""

    async def in_one_transaction(database: Database) -> T:
        async with database.sessions.begin() as session:
            return await work(session)

    return await _on_database(url, in_one_transaction)


async def _prepared_url(settings: Settings, *, migrate: bool) -> str:
    """The app role's URL, after migrating (as the owner: DATABASE_OWNER_URL, DATABASE_URL or
    the embedded superuser) when `migrate`, and creating the default roles and the first
    superuser."""
    url = None
    if migrate:
        owner_url = await asyncio.to_thread(owner_database_url, settings)
        applied = await apply_migrations(owner_url, settings.migrations_dir)
        print(f"migrations applied: {applied or 'none pending'}")
        if settings.database_url is None:
            # The embedded server is started and migrated: of what app_database_url would do
            # (start or join it again, check the migrations again), only the app's login role
            # is left. A start used to do all of it twice.
            await ensure_login_role(owner_url, EMBEDDED_APP_LOGIN)
            url = with_user(owner_url, EMBEDDED_APP_LOGIN)
    # The app's own role from here on (embedded: a login role that cannot rewrite the audit
    # trail, created if missing).
    url = url or await app_database_url(settings)
    # Idempotent: the default roles and the first superuser, so the first login works (in
    # production FIRST_SUPERUSER_PASSWORD must be set: the example one is refused).
    created = await _in_transaction(url, lambda session: ensure_defaults(session, settings))
    print(f"bootstrap: created {', '.join(created)}" if created else "bootstrap: up to date")
    return url


def _prepare_database(*, migrate: bool) -> str:
    # One event loop for the whole preparation, not one per step.
    url = asyncio.run(_prepared_url(get_settings(), migrate=migrate))
    # Workers are separate processes: they get the URL instead of each resolving it again.
    os.environ["DATABASE_URL"] = url
    # So does the app `run` serves in this very process: without this, its cached settings
    # still say "embedded", and its start-up would join the server, check the migrations and
    # the login role a third time.
    get_settings.cache_clear()
    return url


def server_options(**options: Any) -> dict[str, Any]:
    """uvicorn's options for `run` and `serve` alike, then the command's own. Client IPs come
    from TRUSTED_PROXIES only (core/network.py): uvicorn's proxy_headers, on by default,
    would believe X-Forwarded-For from 127.0.0.1 whatever TRUSTED_PROXIES says."""
    settings = get_settings()
    return {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "proxy_headers": False,
        "server_header": False,
        **options,
    }


def _start_server(**options: Any) -> None:
    """Prepare the database, then serve the app with uvloop and httptools."""
    _prepare_database(migrate=get_settings().database_url is None)
    uvicorn.run(APP, **server_options(**options))


def _run(args: argparse.Namespace) -> None:
    _start_server(reload=args.reload, reload_dirs=["src"] if args.reload else None)


@contextlib.contextmanager
def _multiprocess_metrics(workers: int) -> Iterator[None]:
    """Several workers: prometheus_client's multiprocess mode, so a scrape answered by any
    worker reports them all (core/metrics.py). Its directory must be in the environment before
    the workers start: a fresh temporary one, removed afterwards, unless
    PROMETHEUS_MULTIPROC_DIR names one (emptied of a previous run's files, then kept)."""
    if workers == 1 or not get_settings().metrics_enabled:
        yield
        return
    if given := os.environ.get(MULTIPROC_DIR_ENV):
        prepare_multiprocess_dir(Path(given))
        yield
        return
    with tempfile.TemporaryDirectory(prefix="backoffice-metrics-") as directory:
        os.environ[MULTIPROC_DIR_ENV] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROC_DIR_ENV]


def _serve(_: argparse.Namespace) -> None:
    workers = get_settings().workers
    with _multiprocess_metrics(workers):
        _start_server(
            workers=workers,
            access_log=False,
            timeout_graceful_shutdown=30,
        )


def _migrate(_: argparse.Namespace) -> None:
    _prepare_database(migrate=True)


async def _unlock(email: str) -> int | None:
    url = await app_database_url(get_settings())
    return await _in_transaction(url, lambda session: unlock_account_by_email(session, email))


def _unlock_user(args: argparse.Namespace) -> None:
    """For when no administrator can log in to `DELETE /api/v1/users/{id}/lock`, e.g. the
    only superuser locked out by someone guessing at its email."""
    user_id = asyncio.run(_unlock(args.email))
    if user_id is None:
        raise SystemExit(f"no user with email {args.email!r}")
    print(f"unlocked user {user_id} ({args.email}): failed logins reset, lock cleared")


async def _purge() -> PurgeResult:
    url = await app_database_url(get_settings())
    return await _on_database(url, lambda database: purge_expired_tokens(database.sessions))


def _purge_tokens(_: argparse.Namespace) -> None:
    """What the app's periodic job does (TOKEN_PURGE_INTERVAL_MINUTES), once, now."""
    result = asyncio.run(_purge())
    print(
        f"purged {result.refresh_tokens} expired refresh tokens and "
        f"{result.revoked_access_tokens} expired revoked access tokens"
        + ("" if result.complete else " (stopped: another purge holds the lock)")
    )


class _StopRequested(KeyboardInterrupt):
    """SIGINT or SIGTERM, seen by our handler: before uvicorn serves, or re-raised by uvicorn
    once its graceful shutdown is done. A KeyboardInterrupt, which uvicorn.run takes for the
    end of serving and returns from quietly."""


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(slots=True)
class _Stop:
    signal: int | None = None  # the one that stopped the command, if our handler saw it


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[_Stop]:
    """SIGINT and SIGTERM end the block by an exception, so that every `finally` runs, and
    the block exits normally; from its end on, they are ignored.

    While uvicorn serves, its own handlers take over; afterwards it re-raises the signal it
    got, for the handler it found: this one. Python's defaults would make that a
    KeyboardInterrupt traceback (SIGINT) or an instant death that skips every clean-up
    (SIGTERM). The first signal stops; later ones (a second Ctrl-C, or the copy `uv run`
    forwards of a signal the whole process group got) are ignored."""
    stop = _Stop()

    def on_signal(signum: int, _: FrameType | None) -> None:
        if stop.signal is not None:
            return
        stop.signal = signum
        raise _StopRequested(signal.Signals(signum).name)

    for number in _STOP_SIGNALS:
        signal.signal(number, on_signal)
    try:
        yield stop
    except _StopRequested:
        pass  # asked for: a clean exit
    finally:
        # The process is on its way out, and uvicorn's supervisors (reload, workers) leave
        # their own handlers installed: no signal may cut the clean-up short. SIG_IGN, not a
        # Python function: the interpreter resets those to the default (death) as it finalizes.
        for number in _STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)


def main() -> None:
    parser = argparse.ArgumentParser(prog="backoffice")
    parser.set_defaults(server=False)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="development server")
    run.add_argument("--reload", action="store_true", help="restart on code changes")
    run.set_defaults(handler=_run, server=True)
    commands.add_parser("serve", help="production server (workers, no reload)").set_defaults(
        handler=_serve, server=True
    )
    commands.add_parser(
        "migrate", help="apply pending migrations without the Atlas CLI"
    ).set_defaults(handler=_migrate)
    unlock = commands.add_parser(
        "unlock-user", help="clear the failed-login lock of an account (when no admin can log in)"
    )
    unlock.add_argument("email", help="the account's email (any case)")
    unlock.set_defaults(handler=_unlock_user)
    commands.add_parser(
        "purge-tokens", help="delete expired refresh tokens and revoked-token rows"
    ).set_defaults(handler=_purge_tokens)
    args = parser.parse_args()
    try:
        with _stopped_by_signals() as stop:
            args.handler(args)
    except ValidationError as exc:  # the settings: one line, not a traceback
        raise SystemExit(f"backoffice {args.command}: {settings_problems(exc)}") from None
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        # Before serving (migrations, bootstrap) or in a one-shot command: say so in one line
        # and exit 1, for a process manager to start it again once the database is back.
        raise SystemExit(
            f"backoffice {args.command}: the database is unavailable ({describe_error(exc)}); "
            "check that it runs and that DATABASE_URL points at it"
        ) from None
    finally:
        embedded.release()
    if stop.signal is not None and not args.server:
        raise SystemExit(128 + stop.signal)


if __name__ == "__main__":
    main()
