"""`python -m backoffice run` (`task run`) treats forwarded headers exactly as `serve` does:
the client's address comes from TRUSTED_PROXIES alone, never from uvicorn's own proxy-header
handling (which, by default, believes any `X-Forwarded-For` sent from 127.0.0.1)."""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest

from backoffice.core.config import Settings
from backoffice.core.migrations import apply_migrations
from tests.auth.conftest import LOGIN
from tests.conftest import MIGRATIONS_DIR, _admin, _with_database

START_TIMEOUT_S = 60.0


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def _fresh_database(server_url: str) -> AsyncIterator[str]:
    """A database of its own: `run` bootstraps roles and a superuser, committed for good."""
    name = f"backoffice_run_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        url = _with_database(server_url, name)
        await apply_migrations(url, MIGRATIONS_DIR)
        yield url
    finally:
        await _admin(server_url, f'DROP DATABASE "{name}" WITH (FORCE)')


@contextmanager
def _run_server(database_url: str, port: int, workdir: Path) -> Iterator[Path]:
    names = {name.upper() for name in Settings.model_fields}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in names}
    environment |= {
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOGIN_RATE_LIMIT": "2/minute",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    log = workdir / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "backoffice", "run"],
            cwd=workdir,  # no developer's .env
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield log
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


async def _wait_until_ready(client: httpx.AsyncClient, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if (await client.get("/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        await asyncio.sleep(0.2)
    pytest.fail(f"`run` did not start within {START_TIMEOUT_S:.0f} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def test_run_does_not_believe_x_forwarded_for_from_localhost(
    server_url: str, tmp_path: Path
) -> None:
    """TRUSTED_PROXIES is empty: three logins from 127.0.0.1, each claiming another address,
    are one client, and the third is over the limit of two."""
    async with _fresh_database(server_url) as database_url:
        port = _free_port()
        with _run_server(database_url, port, tmp_path) as log:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                await _wait_until_ready(client, log)
                responses = [
                    await client.post(
                        LOGIN,
                        data={"username": "nobody@example.com", "password": "a wrong guess"},
                        headers={"X-Forwarded-For": f"198.51.100.{n}"},
                    )
                    for n in range(1, 4)
                ]

    assert [response.status_code for response in responses] == [401, 401, 429]
    assert "server" not in responses[0].headers  # serve's other options hold for run too
