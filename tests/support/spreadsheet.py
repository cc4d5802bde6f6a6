"""Reading CSV downloads and writing CSV uploads in tests."""

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from httpx import Response

CSV_HEADERS = {"Content-Type": "text/csv"}


def csv_rows(response: Response) -> list[dict[str, str]]:
    """The rows of a CSV download, by column, after checking it is one: 200, `text/csv` in
    UTF-8, an attachment named `<stem>-<today>.csv`."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    today = datetime.now(UTC).date().isoformat()
    assert disposition.startswith("attachment; filename=")
    assert disposition.endswith(f'-{today}.csv"')
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8"), newline="")))


def csv_header(response: Response) -> list[str]:
    return next(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))


def csv_file(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """A CSV file as a spreadsheet saves it: UTF-8, CRLF line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()
