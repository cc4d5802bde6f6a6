"""The four servers of a run, each in its own process group, all in production mode with the
same workers; stopped (the whole group) when the run's ExitStack closes, whatever happens."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO

import httpx

from backoffice.core.config import PROJECT_ROOT

from .plan import ACCESS_TOKEN_TTL_MINUTES, DB_POOL_SIZE, Server
from .seeding import SUPERUSER_EMAIL

HOST = "127.0.0.1"
WORKERS = 2
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 35.0  # the API drains for up to 30 s (timeout_graceful_shutdown)
AUTH_OFF_APP = "scripts.bench.auth_off:create_app_without_auth"  # from PROJECT_ROOT
BASELINE_MODULE = "scripts.bench.baseline"

# One secret for every API server of a run, so the token the bench gets works on each.
RUN_SECRET_KEY = secrets.token_urlsafe(48)  # 64 characters
RUN_METRICS_TOKEN = secrets.token_urlsafe(24)  # 32 characters


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def stop_process_group(
    process: subprocess.Popen[bytes],
    stop: signal.Signals = signal.SIGTERM,
    timeout_s: float = STOP_TIMEOUT_S,
) -> None:
    """`stop` to the process's whole group (a server's master and workers; uv, task and the
    app); SIGKILL if it lingers past `timeout_s`."""
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, stop)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, name: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                _fail_server(name, f"exited with code {process.returncode}", log)
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    _fail_server(name, f"did not answer 200 on {url} within {READY_TIMEOUT_S:.0f}s", log)


def _fail_server(name: str, why: str, log: Path) -> None:
    output = log.read_text(errors="replace")[-8000:]
    raise RuntimeError(f"{name} {why}; its output:\n{output}")


@contextmanager
def server(
    name: str, command: list[str], env: dict[str, str], ready_url: str, log_dir: Path
) -> Iterator[None]:
    log = log_dir / f"{name}.log"
    with ExitStack() as stack:
        output: IO[bytes] = stack.enter_context(log.open("wb"))
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(stop_process_group, process)
        wait_ready(ready_url, process, log, name)
        print(f"{name} ready: {ready_url}", flush=True)
        yield


def api_env(database_url: str, port: int, superuser_password: str) -> dict[str, str]:
    return {
        **os.environ,
        "ENVIRONMENT": "production",
        "DATABASE_URL": database_url,
        "SECRET_KEY": RUN_SECRET_KEY,
        # Production refuses /metrics without a token; the servers keep metrics on, as deployed.
        "METRICS_TOKEN": RUN_METRICS_TOKEN,
        "FIRST_SUPERUSER_EMAIL": SUPERUSER_EMAIL,
        "FIRST_SUPERUSER_PASSWORD": superuser_password,
        "ACCESS_TOKEN_TTL_MINUTES": str(ACCESS_TOKEN_TTL_MINUTES),
        "HOST": HOST,
        "PORT": str(port),
        "WORKERS": str(WORKERS),
        # A fixed pool per worker, the baseline's size (plan.DB_POOL_SIZE): the bench's
        # PostgreSQL (plan.MAX_CONNECTIONS) then has room for every server of the run.
        "DB_POOL_SIZE": str(DB_POOL_SIZE),
        "DB_MAX_OVERFLOW": "0",
        "LOG_LEVEL": "WARNING",
    }


def api_command() -> list[str]:
    return [sys.executable, "-m", "backoffice", "serve"]


def auth_off_command(port: int) -> list[str]:
    """uvicorn as `python -m backoffice serve` runs it, on the bench-only app factory."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "--app-dir",
        str(PROJECT_ROOT),
        AUTH_OFF_APP,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--no-proxy-headers",
        "--no-server-header",
        "--timeout-graceful-shutdown",
        "30",
    ]


def baseline_command(port: int) -> list[str]:
    args = ["--host", HOST, "--port", str(port), "--workers", str(WORKERS)]
    return [sys.executable, "-m", BASELINE_MODULE, *args]


def launch(
    which: Server, port: int, database_url: str, superuser_password: str
) -> tuple[list[str], dict[str, str], str]:
    """How to start `which` on `port`: (command, environment, path that answers 200 when
    ready)."""
    api = api_env(database_url, port, superuser_password)
    match which:
        case Server.API:
            return api_command(), api, "/health/ready"
        case Server.AUTH_OFF:
            return auth_off_command(port), {**api, "BENCH_AUTH_OFF": "1"}, "/health/ready"
        case Server.AUDIT_OFF:
            audit_off = {"AUDIT_ACCESS_ENABLED": "false", "AUDIT_DATA_ENABLED": "false"}
            return api_command(), {**api, **audit_off}, "/health/ready"
        case Server.BASELINE:
            baseline_env = {**os.environ, "BENCH_DATABASE_URL": database_url}
            return baseline_command(port), baseline_env, "/products/1"


def start_servers(
    stack: ExitStack, database_url: str, superuser_password: str, log_dir: Path
) -> dict[Server, str]:
    """Start every server, one after the other, each stopped when `stack` closes; return
    their base URLs."""
    ports = {which: free_port() for which in Server}
    addresses = {which: f"http://{HOST}:{port}" for which, port in ports.items()}
    for which, port in ports.items():
        command, env, ready_path = launch(which, port, database_url, superuser_password)
        ready_url = f"{addresses[which]}{ready_path}"
        stack.enter_context(server(which, command, env, ready_url, log_dir))
    return addresses
