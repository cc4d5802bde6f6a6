"""A real server for the tests that need one: `python -m backoffice run|serve` as a process of
its own, over a freshly migrated database of its own (`tests.support.database.scratch_database`)."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from backoffice.core.config import Settings

START_TIMEOUT_S = 60.0  # a loaded 2-core CI machine starts slowly


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_environment(**settings: str) -> dict[str, str]:
    """The caller's environment minus every application setting, then exactly `settings`."""
    names = {name.upper() for name in Settings.model_fields}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in names}
    return environment | {"PYTHONUNBUFFERED": "1"} | settings


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


@contextmanager
def server_process(
    command: str, environment: Mapping[str, str], workdir: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m backoffice <command>`, killed (its whole process group) if still running."""
    with log.open("wb") as output:
        server = subprocess.Popen(  # noqa: S603  # our own interpreter and module
            [sys.executable, "-m", "backoffice", command],
            cwd=workdir,  # a directory of its own: a developer's .env must not leak in
            env=dict(environment),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, signalled as one
        )
    try:
        yield server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


async def wait_until_ready(
    server: subprocess.Popen[bytes], client: httpx.AsyncClient, log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{tail(log)}")
        try:
            if (await client.get("/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        await asyncio.sleep(0.1)
    pytest.fail(f"the server was not ready within {START_TIMEOUT_S:.0f} s:\n{tail(log)}")
