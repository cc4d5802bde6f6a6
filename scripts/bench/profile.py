"""Where a request's time goes: the API (one worker, production settings, the bench's seeded
database) under wrk, sampled by py-spy, as a table of CPU samples by the package of the frame
that was running (docs/PERFORMANCE.md shows one). Optionally a flame graph too.

    uv run python -m scripts.bench.profile                         # GET /api/v1/products/{id}
    uv run python -m scripts.bench.profile --path '/api/v1/tasks?limit=100' --svg tasks.svg

py-spy reads the worker's memory (ptrace): run it as root, or where ptrace is allowed.
"""

import argparse
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import psutil

from . import servers
from .client import authorization, log_in
from .load import WrkMissingError, find_wrk
from .plan import Options, Server
from .seeding import embedded_database

CONNECTIONS = 64
WARMUP_S = 3
# The package a frame belongs to -> the row it counts in, first match wins (the frame's file).
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("/backoffice/", "our code (src/backoffice)"),
    ("/asyncpg/", "asyncpg (driver)"),
    ("/sqlalchemy/", "SQLAlchemy (sessions, pool, Core)"),
    ("/pydantic", "pydantic (validation, serialization)"),
    ("/httptools/", "uvicorn (HTTP protocol)"),
    ("/fastapi/", "FastAPI (routing, dependencies)"),
    ("/starlette/", "Starlette (requests, responses)"),
    ("/uvicorn/", "uvicorn (HTTP protocol)"),
    ("/jwt/", "PyJWT"),
    ("/prometheus", "prometheus metrics"),
    ("/structlog/", "structlog"),
    ("/asyncio/", "asyncio (event loop, tasks)"),
    ("/uvloop/", "asyncio (event loop, tasks)"),
)
_FILE = re.compile(r"\((?P<file>[^:()]+)(?::\d+)?\)$")


def category(frame: str) -> str:
    match = _FILE.search(frame)
    path = "/" + (match.group("file") if match else frame)  # py-spy shortens site-packages paths
    return next((name for marker, name in CATEGORIES if marker in path), "other (stdlib, C)")


def table(raw: Path) -> list[tuple[str, float]]:
    """Share of samples per category of the innermost frame (py-spy's raw output: one
    `frame;frame;...;frame count` line per distinct stack)."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            counts[category(stack.split(";")[-1])] += int(count)
    total = sum(counts.values()) or 1
    return [(name, 100 * count / total) for name, count in counts.most_common()]


def worker_pid(port: int) -> int:
    """The process serving `port` (with one worker, uvicorn serves in the main process)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline[-2:] == ["backoffice", "serve"] and process.environ().get("PORT") == str(port):
            return process.pid
    raise RuntimeError(f"no server process on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/api/v1/products/123")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--svg", type=Path, help="also write a flame graph here")
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy not found: uv sync (it is a dev dependency)")
    try:
        wrk = find_wrk()
    except WrkMissingError as exc:
        sys.exit(str(exc))
    servers.WORKERS = 1  # one process to sample; wrk and PostgreSQL get the other core
    options = Options(
        duration=args.seconds,
        connections=CONNECTIONS,
        threads=2,
        products=10_000,
        customers=1_000,
        tasks=10_000,
        repeat=1,
    )
    password = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="profile-")))
        url = stack.enter_context(embedded_database(options, password))
        port = servers.free_port()
        command, env, ready = servers.launch(Server.API, port, url, password)
        base = f"http://{servers.HOST}:{port}"
        stack.enter_context(servers.server("api", command, env, base + ready, work_dir))
        header = "Authorization: " + authorization(log_in(base, password))["Authorization"]
        target = base + args.path
        load = [wrk, "-t2", f"-c{CONNECTIONS}", "-H", header]
        subprocess.run([*load, f"-d{WARMUP_S}s", target], check=True, capture_output=True)
        raw = work_dir / "profile.txt"
        spy = ["py-spy", "record", "-p", str(worker_pid(port)), "-r", "250"]
        sampler = subprocess.Popen(
            [*spy, "-d", str(args.seconds), "-f", "raw", "-o", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wrk_run = subprocess.run(
            [*load, f"-d{args.seconds}s", target], check=True, capture_output=True, text=True
        )
        sampler.wait()
        rows = table(raw)
        if args.svg:
            flame = [*spy, "-d", "5", "-f", "flamegraph", "-o", str(args.svg), "--nonblocking"]
            sampler = subprocess.Popen(flame, stdout=subprocess.DEVNULL)
            subprocess.run([*load, "-d5s", target], check=True, capture_output=True)
            sampler.wait()
    rate = next(line for line in wrk_run.stdout.splitlines() if line.startswith("Requests/sec"))
    print(f"{args.path}, 1 worker, {CONNECTIONS} connections: {rate.split()[-1]} req/s\n")
    print("| where the CPU samples were (innermost frame) | share |\n|---|---:|")
    for name, share in rows:
        print(f"| {name} | {share:.1f}% |")


if __name__ == "__main__":
    main()
