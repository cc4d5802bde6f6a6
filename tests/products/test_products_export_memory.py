"""The export streams: 50,000 products leave a real server (`python -m backoffice serve`, one
worker, over a database of its own) with its memory about where it was.

The server's resident memory is sampled every few milliseconds while the file downloads. Read
a batch at a time (core/spreadsheet.py), its growth stays within a few MiB (4.3 MiB measured);
an export that read every row first and wrote the file after grows by about 106 MiB at this
size (measured by running this test with EXPORT_BATCH_SIZE set above the row count), and more
with every row. The test takes about 7 s (18 s on a busy machine), half of it the server's start.
"""

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import psutil

from backoffice.core.database import libpq_url
from tests.live_server import free_port, server_environment, server_process, tail, wait_until_ready
from tests.support.database import as_app, scratch_database
from tests.support.factories import PRODUCTS
from tests.support.users import LOGIN

ROWS = 50_000
# Growth of the server's resident memory allowed while it streams the export: streaming
# measured 4.3 MiB, the whole result in memory 106 MiB.
MAX_GROWTH_BYTES = 24 * 1024 * 1024
SAMPLE_INTERVAL_S = 0.005


async def seed_products(database_url: str) -> None:
    """50,000 products in one statement (the audit trigger switched off: not under test)."""
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL backoffice.audit = 'off'")
            await connection.execute(
                "INSERT INTO products (sku, name, description, price, stock_quantity) "
                "SELECT 'MEM-' || n, 'Product number ' || n, repeat('Described at length. ', 5), "
                "(n % 1000) + 0.99, n % 500 FROM generate_series(1, $1) n",
                ROWS,
            )
    finally:
        await connection.close()


class PeakMemory:
    """The highest resident memory of a process and its children, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = 0
        self._running = False

    def current(self) -> int:
        processes = [self._process, *self._process.children(recursive=True)]
        return sum(process.memory_info().rss for process in processes)

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, self.current())
            time.sleep(SAMPLE_INTERVAL_S)

    @contextmanager
    def watching(self) -> Iterator[None]:
        self.peak = self.current()
        self._running = True
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        try:
            yield
        finally:
            self._running = False
            sampler.join()


async def count_exported_rows(
    client: httpx.AsyncClient, token: str, params: dict[str, str] | None = None
) -> int:
    """The data rows of the export, read as they arrive (the test holds no more than the
    server should)."""
    lines = 0
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{PRODUCTS}/export"
    async with client.stream("GET", url, headers=headers, params=params) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            lines += chunk.count(b"\n")  # a chunk may end between \r and \n
    return lines - 1  # the header


async def test_exporting_50000_products_streams_in_near_constant_server_memory(
    server_url: str, app_login: tuple[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    port = free_port()
    password = secrets.token_urlsafe(24)
    async with scratch_database(server_url, "backoffice_export") as database_url:
        await seed_products(database_url)
        environment = server_environment(
            ENVIRONMENT="test",
            DATABASE_URL=as_app(database_url, app_login),
            DATABASE_OWNER_URL=database_url,
            FIRST_SUPERUSER_EMAIL="exporter@example.com",
            FIRST_SUPERUSER_PASSWORD=password,
            PORT=str(port),
            WORKERS="1",
            LOG_LEVEL="WARNING",
            AUDIT_ACCESS_ENABLED="false",
        )
        with server_process("serve", environment, tmp_path, log) as server:
            base_url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
                await wait_until_ready(server, client, log)
                login = await client.post(
                    LOGIN, data={"username": "exporter@example.com", "password": password}
                )
                token = login.json()["access_token"]
                # Warm up: every module imported and an export's code run once, on a few
                # rows (a whole export first would leave its peak in the baseline).
                assert await count_exported_rows(client, token, {"min_price": "999"}) == 50
                await asyncio.sleep(0.5)
                memory = PeakMemory(server.pid)
                baseline = memory.current()
                started = time.monotonic()
                with memory.watching():
                    rows = await count_exported_rows(client, token)
                elapsed = time.monotonic() - started

    growth = memory.peak - baseline
    print(  # noqa: T201  # the figures, shown with -s
        f"\nexport of {rows} rows: {elapsed:.1f} s, server RSS {baseline / 2**20:.0f} MiB at "
        f"rest, peak growth {growth / 2**20:.1f} MiB"
    )
    assert rows == ROWS, tail(log)
    assert growth < MAX_GROWTH_BYTES, f"grew by {growth / 2**20:.1f} MiB"
