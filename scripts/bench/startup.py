"""Start-up time: `uv run task run`, from launch to the first 200 on /health/ready.

- warm: this checkout, started twice, the second start timed (its venv, bytecode and embedded
  database already made by the first);
- cold: a fresh `git clone` of this checkout's HEAD into a temporary directory, with uv's
  cache warm: the time includes uv creating the venv, installing from its cache and compiling
  the bytecode, then initdb of the clone's own embedded PostgreSQL and its migrations.

Each start gets a free port, and the environment minus every setting the app reads (so a
DATABASE_URL of the caller's does not turn the embedded server off). Each is stopped as a
developer stops it, SIGINT to its process group (Ctrl-C): `python -m backoffice` then stops the
embedded PostgreSQL it started. The clone is deleted afterwards, whatever happens.

    uv run python -m scripts.bench.startup [--skip-cold]
"""

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from backoffice.core import embedded
from backoffice.core.config import PROJECT_ROOT, Settings

from .servers import HOST, free_port, stop_process_group

COMMAND = ("uv", "run", "task", "run")
READY_PATH = "/health/ready"
POLL_INTERVAL_S = 0.05
# A cold start on a busy machine compiles thousands of files and runs initdb: be generous.
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
# The caller's own environment, which a developer's fresh shell would not have: uv's project
# settings of this checkout would point the clone at this venv.
FOREIGN_ENV = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PORT", "HOST")


@dataclass(frozen=True, slots=True)
class StartupTimes:
    """Seconds from launch to ready; None when not measured."""

    warm_s: float | None
    cold_s: float | None


def start_env(port: int) -> dict[str, str]:
    """The caller's environment without any app setting (the embedded database, defaults), on
    `port`, logging warnings only."""
    settings = {name.upper() for name in Settings.model_fields}
    dropped = settings | set(FOREIGN_ENV)
    env = {name: value for name, value in os.environ.items() if name.upper() not in dropped}
    return env | {"PORT": str(port), "LOG_LEVEL": "WARNING"}


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a developer stops it: SIGINT to the whole group (uv, task, the app)."""
    stop_process_group(process, signal.SIGINT, STOP_TIMEOUT_S)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"`{' '.join(COMMAND)}` exited with code {process.returncode}; its output:\n"
                    + log.read_text(errors="replace")[-8000:]
                )
            with suppress(httpx.TransportError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"{url} did not answer 200 within {READY_TIMEOUT_S:.0f}s; see {log}")


def time_start(project: Path, log: Path) -> float:
    """Seconds from launching `uv run task run` in `project` to its first 200 on
    /health/ready; the server is stopped before returning."""
    port = free_port()
    url = f"http://{HOST}:{port}{READY_PATH}"
    with ExitStack() as stack:
        output: IO[bytes] = stack.enter_context(log.open("wb"))
        started = time.perf_counter()
        process = subprocess.Popen(
            COMMAND,
            cwd=project,
            env=start_env(port),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(_stop, process)
        _wait_ready(url, process, log)
        return time.perf_counter() - started


def time_warm(work_dir: Path) -> float:
    """The second of two starts of this checkout."""
    time_start(PROJECT_ROOT, work_dir / "warm-1.log")
    return time_start(PROJECT_ROOT, work_dir / "warm-2.log")


def time_cold(work_dir: Path) -> float:
    """One start of a fresh clone of HEAD (uncommitted changes are not in it)."""
    clone = work_dir / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(PROJECT_ROOT), str(clone)], check=True
    )
    try:
        return time_start(clone, work_dir / "cold.log")
    finally:
        # The app stops the embedded server it started; this is for a start that never got
        # that far (killed), so that no server runs on a deleted directory.
        postmaster = embedded.running_postmaster(clone / ".data" / "postgres")
        if postmaster is not None:
            embedded.stop_postmaster(postmaster)


def measure_startup(*, cold: bool = True) -> StartupTimes:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as directory:
        work_dir = Path(directory)
        print("start-up: warm `uv run task run` (twice, the second timed)", flush=True)
        warm = time_warm(work_dir)
        cold_s = None
        if cold:
            print("start-up: cold `uv run task run` on a fresh clone", flush=True)
            cold_s = time_cold(work_dir)
    return StartupTimes(warm_s=warm, cold_s=cold_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="time the warm start only")
    args = parser.parse_args()
    if shutil.which("uv") is None:
        parser.error("uv must be on PATH")
    times = measure_startup(cold=not args.skip_cold)
    for name, seconds in (("warm", times.warm_s), ("cold", times.cold_s)):
        if seconds is not None:
            print(f"{name} start: {seconds:.2f} s")


if __name__ == "__main__":
    main()
