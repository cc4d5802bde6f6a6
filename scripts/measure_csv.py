"""Time the CSV import and export against a running server (README, "Spreadsheets").

    uv run python scripts/measure_csv.py [--url http://127.0.0.1:8000] [--rows 10000]
                                         [--email admin@example.com] [--password ...]

Logs in, then with `--rows` new products (SKUs unique to this run): a dry run of the file,
the import itself (every row created), the same file with new prices (every row updated), and
the export of every product. Prints the wall time of each, as the client sees it. The rows
stay: run it against a database you can throw away (`task run` on a fresh clone's embedded
one, or `task db-reset` afterwards).
"""

import argparse
import csv
import io
import secrets
import time
from collections.abc import Callable
from functools import partial

import httpx

from backoffice.core.config import EXAMPLE_SUPERUSER_EMAIL, EXAMPLE_SUPERUSER_PASSWORD

IMPORT = "/api/v1/products/import"
EXPORT = "/api/v1/products/export"


def price_list(rows: int, run: str, cents: int) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(("sku", "name", "description", "price", "stock_quantity", "is_active"))
    writer.writerows(
        (
            f"M{run}-{n:06d}",
            f"Measured product {n}",
            "A line of text.",
            f"{n % 900}.{cents:02d}",
            n % 50,
            "true",
        )
        for n in range(rows)
    )
    return buffer.getvalue().encode()


def timed[T](label: str, work: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = work()
    print(f"{label}: {time.perf_counter() - started:.2f} s")  # the script's output
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--email", default=EXAMPLE_SUPERUSER_EMAIL)
    parser.add_argument("--password", default=EXAMPLE_SUPERUSER_PASSWORD)
    args = parser.parse_args()
    run = secrets.token_hex(3)
    with httpx.Client(base_url=args.url, timeout=300) as client:
        login = client.post(
            "/api/v1/auth/sessions", data={"username": args.email, "password": args.password}
        )
        login.raise_for_status()
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        headers = {"Content-Type": "text/csv"}
        created, updated = price_list(args.rows, run, 0), price_list(args.rows, run, 50)
        print(f"{args.rows} rows, {len(created) / 2**20:.2f} MiB")
        for label, body, params in (
            ("dry run (all new)", created, {"dry_run": "true"}),
            ("import (all created)", created, {}),
            ("import (all updated)", updated, {}),
        ):
            send = partial(client.post, IMPORT, content=body, headers=headers, params=params)
            response = timed(label, send)
            response.raise_for_status()
        export = timed("export (every product)", lambda: client.get(EXPORT))
        export.raise_for_status()
        print(f"exported {export.content.count(b'\n') - 1} rows")


if __name__ == "__main__":
    main()
