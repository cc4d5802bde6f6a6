"""Servers of the tests' own that the app talks to besides PostgreSQL: a redis-server and a
PgBouncer, each on a free port, started and stopped by the test (no system service). A binary
missing is a skip on a developer's machine and a failure in CI, which installs them (.ci/run)."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from tests.live_server import free_port

_START_TIMEOUT_S = 10.0


class CIEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")
    ci: bool = False


def required_binary(name: str, package: str) -> str:
    """The path of `name`; a skip without it, or under CI=true a failure (CI installs it)."""
    binary = shutil.which(name) or next(
        (str(path) for path in (Path("/usr/sbin") / name, Path("/sbin") / name) if path.exists()),
        None,
    )
    if binary is None:
        message = f"{name} is not installed (apt-get install {package})"
        if CIEnvironment().ci:
            pytest.fail(message)  # CI installs it: missing there is a broken set-up
        pytest.skip(message)
    return binary


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {_START_TIMEOUT_S} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free port, no persistence; yields its URL."""
    binary = required_binary("redis-server", "redis-server")
    port = free_port()
    server = subprocess.Popen(  # noqa: S603  # a fixed binary and arguments
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, server, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(server)


@dataclass(frozen=True, slots=True)
class PgBouncer:
    port: int
    directory: Path

    def url(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    @property
    def log(self) -> Path:
        return self.directory / "pgbouncer.log"


def _config(postgres_port: int, port: int, directory: Path, pool_size: int) -> str:
    return f"""\
[databases]
* = host=127.0.0.1 port={postgres_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {directory}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
; With PostgreSQL down, a client waits this long for a server connection, then gets an error
; (the app's 503); PostgreSQL back, a new login is tried within a second.
query_wait_timeout = 3
server_login_retry = 1
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
"""


@contextmanager
def pgbouncer(postgres_port: int, users: dict[str, str], *, pool_size: int) -> Iterator[PgBouncer]:
    """Debian's PgBouncer in transaction mode in front of the PostgreSQL on `postgres_port`,
    `pool_size` server connections per database and user, clients authenticated by SCRAM
    against `users` (name: password). PgBouncer refuses to run as root: as root it runs as
    the embedded PostgreSQL's system user (tests/own_postgres.py)."""
    binary = required_binary("pgbouncer", "pgbouncer")
    directory = Path(tempfile.mkdtemp(prefix="backoffice-pgbouncer-"))
    system_user = "embedded_postgres" if os.geteuid() == 0 else None
    port = free_port()
    (directory / "pgbouncer.ini").write_text(_config(postgres_port, port, directory, pool_size))
    (directory / "userlist.txt").write_text(
        "".join(f'"{user}" "{password}"\n' for user, password in users.items())
    )
    if system_user is not None:
        account = pwd.getpwnam(system_user)
        for path in (directory, *directory.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
    process = subprocess.Popen(  # noqa: S603  # the system's pgbouncer, our own config
        [binary, str(directory / "pgbouncer.ini")],
        user=system_user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, process, "pgbouncer")
        yield PgBouncer(port, directory)
    finally:
        _stop(process)  # SIGTERM: PgBouncer's immediate shutdown
        shutil.rmtree(directory, ignore_errors=True)
