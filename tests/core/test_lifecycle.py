"""The embedded PostgreSQL's lifecycle under the README's command: `uv run task run` (and
`task serve`) started in a process group of its own, as a terminal runs it, then
stopped the ways a developer or a process manager stops it. A clean stop (Ctrl-C, SIGTERM to
the group or to the server alone) ends the embedded server it started, exits 0 and prints no
traceback; EMBEDDED_DB_KEEP_RUNNING leaves the server running; another live user keeps it up
(the last one to leave stops it), and one killed outright (SIGKILL) no longer counts.

The runs share one data directory (initdb and the migrations are paid once), emptied of any
running server before and after each test, so each proves its own stop.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psutil
import pytest

from backoffice.core.config import PROJECT_ROOT
from backoffice.core.embedded import stop_postmaster
from tests.live_server import free_port, server_environment, tail, wait_until_ready

STOP_TIMEOUT_S = 60.0  # graceful shutdown, then PostgreSQL's checkpoint, on a loaded machine
# Another process using the embedded server (as `task migrate-builtin` does): it joins, says
# so, and leaves as `python -m backoffice` does on exit (release) once its stdin closes.
_USER = """
import sys
from pathlib import Path
from backoffice.core import embedded
embedded.join(Path(sys.argv[1]))
print("joined", flush=True)
sys.stdin.read()
embedded.release()
"""


def _uv() -> str:
    # `uv run` tells its children where it is; a shell with uv on PATH does too.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH: the README's `uv run task run` cannot be run")
    return uv


def _postgres_on(data_dir: Path) -> list[psutil.Process]:
    """The PostgreSQL servers whose command line names `data_dir`."""
    found: list[psutil.Process] = []
    for process in psutil.process_iter(["name", "cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == "postgres" and str(data_dir) in command:
            found.append(process)
    return found


def _stop_postgres_on(data_dir: Path) -> None:
    for process in _postgres_on(data_dir):
        stop_postmaster(process)


@pytest.fixture(scope="module")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("lifecycle") / "pg"
    yield data_dir
    _stop_postgres_on(data_dir)


@pytest.fixture
def data_dir(shared_data_dir: Path) -> Iterator[Path]:
    """The shared data directory with no server running on it, and none left afterwards,
    whatever the test did (a failed test may have left one)."""
    _stop_postgres_on(shared_data_dir)
    yield shared_data_dir
    _stop_postgres_on(shared_data_dir)


@contextmanager
def _task(
    command: str, data_dir: Path, tmp_path: Path, **settings: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """`uv run task <command>` in a process group of its own (killed if still running), serving
    on a free port over the embedded PostgreSQL in `data_dir`. It runs in a directory of its own
    holding a link to the Taskfile (go-task runs the commands there, and uv finds the project
    through UV_PROJECT), so a developer's .env cannot leak in."""
    workdir = tmp_path / command
    workdir.mkdir(parents=True)
    (workdir / "Taskfile.yml").symlink_to(PROJECT_ROOT / "Taskfile.yml")
    port = free_port()
    environment = server_environment(
        EMBEDDED_DB_DIR=str(data_dir),
        HOST="127.0.0.1",
        PORT=str(port),
        ENVIRONMENT="development",
        **settings,
    ) | {"UV_PROJECT": str(PROJECT_ROOT), "UV_FROZEN": "1"}
    log = workdir / "output.log"
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603  # uv, found on PATH
            [_uv(), "run", "task", command],
            cwd=workdir,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group, as a terminal's foreground job
        )
    try:
        yield process, log, port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


async def _ready(process: subprocess.Popen[bytes], log: Path, port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        await wait_until_ready(process, client, log)


def _python_server(process: subprocess.Popen[bytes]) -> psutil.Process:
    """`python -m backoffice run` under uv and task: what a process manager running the server
    directly would signal."""
    for child in psutil.Process(process.pid).children(recursive=True):
        with suppress(psutil.Error):  # gone meanwhile
            if child.cmdline()[1:3] == ["-m", "backoffice"]:
                return child
    pytest.fail("no `python -m backoffice` process under `uv run task run`")


async def _stopped(process: subprocess.Popen[bytes], log: Path) -> int:
    """The exit status, once the whole run has exited (within STOP_TIMEOUT_S)."""
    try:
        return await asyncio.to_thread(process.wait, STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_TIMEOUT_S:.0f} s after the signal:\n{tail(log)}")


def _assert_clean_stop(exit_code: int, data_dir: Path, log: Path) -> None:
    output = log.read_text(errors="replace")
    assert exit_code == 0, tail(log)
    assert "Traceback" not in output, tail(log)
    assert "database.embedded_stopped" in output, tail(log)
    assert _postgres_on(data_dir) == [], tail(log)


@pytest.mark.parametrize("command", ["run", "serve"])
async def test_sigterm_to_the_process_group_stops_the_embedded_postgres(
    command: str, data_dir: Path, tmp_path: Path
) -> None:
    # What docker, systemd and `timeout` do: the whole group gets SIGTERM (and uv forwards a
    # second copy to its child). `serve` runs two workers under uvicorn's supervisor. (`dev`,
    # under uvicorn's reloader, exits the same way as `serve`: add it here if that changes.)
    with _task(command, data_dir, tmp_path, WORKERS="2") as (process, log, port):
        await _ready(process, log, port)
        assert _postgres_on(data_dir), tail(log)
        os.killpg(process.pid, signal.SIGTERM)
        exit_code = await _stopped(process, log)

    _assert_clean_stop(exit_code, data_dir, log)
    assert "Application shutdown complete." in log.read_text(), tail(log)


async def test_sigterm_to_the_server_alone_stops_the_embedded_postgres(
    data_dir: Path, tmp_path: Path
) -> None:
    # What a process manager running `python -m backoffice run` directly does.
    with _task("run", data_dir, tmp_path) as (process, log, port):
        await _ready(process, log, port)
        assert _postgres_on(data_dir), tail(log)
        _python_server(process).send_signal(signal.SIGTERM)
        exit_code = await _stopped(process, log)

    _assert_clean_stop(exit_code, data_dir, log)


async def test_ctrl_c_stops_the_embedded_postgres_without_a_traceback(
    data_dir: Path, tmp_path: Path
) -> None:
    # A terminal's Ctrl-C: SIGINT to the foreground process group. A second SIGINT (another
    # Ctrl-C, or a copy forwarded by uv) used to interrupt the library's exit hook mid-stop
    # with a traceback; a re-raised SIGINT without one used to end in a KeyboardInterrupt.
    with _task("run", data_dir, tmp_path) as (process, log, port):
        await _ready(process, log, port)
        assert _postgres_on(data_dir), tail(log)
        os.killpg(process.pid, signal.SIGINT)
        exit_code = await _stopped(process, log)

    _assert_clean_stop(exit_code, data_dir, log)


@contextmanager
def _user(data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another process using the embedded server until the block ends."""
    with subprocess.Popen(  # noqa: S603  # our own interpreter
        [sys.executable, "-c", _USER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=server_environment(),
    ) as user:
        assert user.stdin is not None
        assert user.stdout is not None
        try:
            assert user.stdout.readline() == b"joined\n"
            yield user
        finally:
            user.stdin.close()  # it leaves
            user.wait(timeout=STOP_TIMEOUT_S)


def _users(data_dir: Path) -> list[int]:
    users: list[int] = json.loads((data_dir / ".handle_pids.json").read_text())
    return users


async def test_the_last_live_user_stops_the_embedded_postgres_and_a_killed_one_does_not_count(
    data_dir: Path, tmp_path: Path
) -> None:
    # SIGKILL runs no clean-up: the library keeps counting a killed process among the server's
    # users, which used to keep the server up for good. A live user must keep it up instead:
    # the run leaves it running for that one, which stops it as it leaves.
    with _user(data_dir) as killed:
        killed.kill()
    assert killed.pid in _users(data_dir)
    with _user(data_dir) as sharing:
        with _task("run", data_dir, tmp_path) as (process, log, port):
            await _ready(process, log, port)
            os.killpg(process.pid, signal.SIGTERM)
            exit_code = await _stopped(process, log)

        output = log.read_text(errors="replace")
        assert exit_code == 0, tail(log)
        assert "Traceback" not in output, tail(log)
        assert "database.embedded_left_running" in output, tail(log)
        assert _postgres_on(data_dir), tail(log)
        assert _users(data_dir) == [sharing.pid]

    assert sharing.returncode == 0
    assert _postgres_on(data_dir) == []
    assert _users(data_dir) == []


async def test_keep_running_leaves_the_embedded_postgres_running(
    data_dir: Path, tmp_path: Path
) -> None:
    with _task("run", data_dir, tmp_path, EMBEDDED_DB_KEEP_RUNNING="true") as (
        process,
        log,
        port,
    ):
        await _ready(process, log, port)
        assert _postgres_on(data_dir), tail(log)
        os.killpg(process.pid, signal.SIGTERM)
        exit_code = await _stopped(process, log)

    output = log.read_text(errors="replace")
    assert exit_code == 0, tail(log)
    assert "Traceback" not in output, tail(log)
    assert "database.embedded_left_running" in output, tail(log)
    assert _postgres_on(data_dir), tail(log)
    # The run took itself off the server's users: the next run that stops is the last one.
    assert _users(data_dir) == []
