"""CSV in and out: the streaming writer every export uses, the formula rule, and the reader
imports use. (Named `spreadsheet`, not `csv`, so the standard library's module keeps its name.)

Formula injection (OWASP "CSV Injection"): a spreadsheet runs a cell that starts with `=`, `+`,
`-` or `@` as a formula, and tab or carriage return can hide such a start. Every *text* cell of
an export that starts with one of them gets a `'` in front, which spreadsheets show as text.
Numbers are typed data, never text: a number column holding -5 is written `-5` (a spreadsheet
reads it as the number it is, and nothing but digits can follow the sign). An import removes
that one `'` again, so an export edited and imported back keeps every value as it was.
"""

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from http import HTTPStatus
from typing import Any, Final, Protocol

from fastapi import APIRouter
from fastapi.params import Depends
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException

from backoffice.core.errors import DomainError, FieldError, InvalidInputError
from backoffice.core.text import has_unstorable, scrub

CSV_MEDIA_TYPE: Final = "text/csv"
FORMULA_TRIGGERS: Final = frozenset("=+-@\t\r")
QUOTE: Final = "'"
# Rows per database read of an export: memory stays at about one batch whatever the total.
EXPORT_BATCH_SIZE: Final = 1000
# A file with more bad cells than this gets the first ones: enough to fix, small to send.
MAX_REPORTED_ERRORS: Final = 1000
_UTF8_BOM: Final = b"\xef\xbb\xbf"


def _needs_quote(text: str) -> bool:
    """Whether `text` would be a formula, or a text that starts with the neutralising quote
    before one (which must keep its own quote to survive the import's removal of one)."""
    return bool(text) and (
        text[0] in FORMULA_TRIGGERS
        or (text[0] == QUOTE and text.lstrip(QUOTE)[:1] in FORMULA_TRIGGERS)
    )


def neutralise(text: str) -> str:
    """`text` as an export writes it: a spreadsheet shows it, never runs it."""
    return QUOTE + text if _needs_quote(text) else text


def restore(text: str) -> str:
    """A cell as the import reads it: `neutralise` undone."""
    return text[1:] if text[:1] == QUOTE and _needs_quote(text[1:]) else text


def _timestamp(value: datetime) -> str:
    # As the JSON API writes instants: ISO 8601 in UTC with a Z.
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _as_is(value: object) -> object:
    return value


# By exact type, as the driver returns them (a datetime is not formatted as a date).
_FORMATS: Mapping[type, Callable[[Any], object]] = {
    bool: lambda value: "true" if value else "false",
    int: _as_is,
    Decimal: _as_is,  # exact, as stored: "89.90"
    datetime: _timestamp,
    date: date.isoformat,
}


def cell(value: object) -> object:
    """A stored value as a CSV cell: empty for null, `true`/`false`, numbers as written,
    instants in ISO 8601 UTC, days as YYYY-MM-DD, text (enum values included) neutralised."""
    if value is None:
        return ""
    format_value = _FORMATS.get(type(value))
    if format_value is not None:
        return format_value(value)
    return neutralise(str(value.value if isinstance(value, Enum) else value))


class CsvRow(Protocol):
    """A row read by column name, a missing one giving None: asyncpg's Record, a dict."""

    def get(self, key: str, /) -> Any: ...


async def _csv_chunks(
    columns: Sequence[str], first: Sequence[CsvRow], rest: AsyncIterator[Sequence[CsvRow]]
) -> AsyncIterator[bytes]:
    """The header, then one chunk per batch of rows: the buffer is emptied after each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180's line ends
    writer.writerow(columns)
    batch = first
    while True:
        writer.writerows([cell(row.get(column)) for column in columns] for row in batch)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        next_batch = await anext(rest, None)
        if next_batch is None:
            return
        batch = next_batch


def attachment(stem: str, today: date | None = None) -> str:
    """`Content-Disposition` for a download named `<stem>-<day>.csv` (UTC day)."""
    day = (today or datetime.now(UTC).date()).isoformat()
    return f'attachment; filename="{stem}-{day}.csv"'


class CsvResponse(StreamingResponse):
    media_type = CSV_MEDIA_TYPE
    charset = "utf-8"


async def csv_download(
    stem: str, columns: Sequence[str], batches: AsyncIterator[Sequence[CsvRow]]
) -> CsvResponse:
    """A streamed CSV file of `columns` from `batches` (each read when the client is ready
    for it). The first batch is read before the answer starts, so a failure to read at all
    (a database outage, a bad filter) is still a problem answer; a failure later can only cut
    the stream short, which the client sees as an incomplete chunked body."""
    first = await anext(batches, None)
    return CsvResponse(
        _csv_chunks(columns, first or [], batches),
        headers={"Content-Disposition": attachment(stem)},
    )


def csv_download_responses(what: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entry of an export's 200."""
    return {
        HTTPStatus.OK: {
            "description": f"{what} as a UTF-8 CSV file with a header row, streamed.",
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
            "headers": {
                "Content-Disposition": {
                    "description": 'attachment; filename="<name>-<YYYY-MM-DD>.csv"',
                    "schema": {"type": "string"},
                }
            },
        }
    }


async def _method_not_allowed() -> None:
    raise HTTPException(HTTPStatus.METHOD_NOT_ALLOWED)


def refuse_methods(router: APIRouter, path: str, methods: Sequence[str], guard: Depends) -> None:
    """`path` (`/export`) is a resource of its own, not an instance of the router's `/{id}`:
    without this, `methods` (PATCH, DELETE) would reach the instance's routes and fail as an
    invalid id instead of the 405 a client should get. Declared before `/{id}`, guarded like
    the resource (`guard`), left out of the document (`Allow` names the resource's own)."""
    router.add_api_route(
        path,
        _method_not_allowed,
        methods=list(methods),
        dependencies=[guard],
        include_in_schema=False,
        name=f"refuse_{path.strip('/')}_methods",
    )


# --- import -----------------------------------------------------------------------------


class UnsupportedMediaTypeError(DomainError):
    status_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    title = "Unsupported Media Type"
    slug = "unsupported-media-type"


def csv_upload_body(description: str) -> dict[str, Any]:
    """`openapi_extra` for a route that takes a CSV file as its body (read from the request
    itself, so FastAPI cannot document it)."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
        }
    }


def require_csv(content_type: str | None) -> None:
    """A CSV body, in UTF-8 (the default, and the only charset accepted), else a 415."""
    media_type, _, parameters = (content_type or "").partition(";")
    charset = next(
        (
            value.strip().strip('"').lower()
            for name, _, value in (part.partition("=") for part in parameters.split(";"))
            if name.strip().lower() == "charset"
        ),
        "utf-8",
    )
    if media_type.strip().lower() != CSV_MEDIA_TYPE or charset not in {"utf-8", "utf8"}:
        raise UnsupportedMediaTypeError(
            "Send the file as the body with `Content-Type: text/csv` (UTF-8)."
        )


def cell_field(row: int, column: str | None = None) -> str:
    """Where a problem is, as an error's `field`: `body.<row>.<column>`, rows numbered as in
    the file (the header is row 1)."""
    return f"body.{row}" if column is None else f"body.{row}.{scrub(column)}"


class CsvErrors:
    """The errors of a file, at most one per row and column, in file order."""

    def __init__(self) -> None:
        self._errors: dict[tuple[int, str | None], FieldError] = {}
        self._rows: set[int] = set()

    def add(self, row: int, column: str | None, message: str, kind: str) -> None:
        field = cell_field(row, column)
        self._errors.setdefault((row, column), FieldError(field=field, message=message, type=kind))
        self._rows.add(row)

    def has(self, row: int) -> bool:
        return row in self._rows

    def __bool__(self) -> bool:
        return bool(self._errors)

    def raise_if_any(self) -> None:
        if not self._errors:
            return
        errors = sorted(self._errors.values(), key=_file_order)
        shown = errors[:MAX_REPORTED_ERRORS]
        more = (
            f" The first {len(shown)} of {len(errors)} are listed."
            if len(errors) > len(shown)
            else ""
        )
        raise InvalidInputError(
            f"The file has {len(errors)} error(s); nothing was imported. Each names its row "
            f"(the header is row 1) and column.{more}",
            errors=shown,
        )


def _file_order(error: FieldError) -> tuple[int, str]:
    _, row, *column = error.field.split(".", 2)
    return int(row), column[0] if column else ""


def _decoded(body: bytes) -> str:
    """The body as text: UTF-8, an optional byte order mark (Excel writes one) dropped. A
    lone surrogate cannot be valid UTF-8, so this refuses it too."""
    try:
        return body.removeprefix(_UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        raise InvalidInputError(
            f"The file is not valid UTF-8 (line {line}, byte {exc.start}); save it as "
            '"CSV UTF-8" and send it again.',
            errors=[
                FieldError(field="body", message=f"invalid UTF-8 on line {line}", type="encoding")
            ],
        ) from exc


class CsvTable:
    """A CSV file read for an import: its header and its non-blank records, each with its
    row number in the file."""

    def __init__(
        self, header: list[str], records: list[tuple[int, list[str]]], *, has_nul: bool
    ) -> None:
        self.header = header
        self.records = records
        self._has_nul = has_nul  # decoded UTF-8 holds no surrogate: a NUL is all to look for

    def rows(self, errors: CsvErrors) -> Iterator[tuple[int, dict[str, str]]]:
        """Each record's number and cells by column (missing trailing cells empty), cells
        `restore`d (the export's quote removed). A record with more cells than the header or
        a cell PostgreSQL cannot store goes to `errors` instead."""
        for number, record in self.records:
            if len(record) > len(self.header):
                message = f"{len(record)} cells, but the header names {len(self.header)}"
                errors.add(number, None, message, "extra_cells")
                continue
            if self._has_nul:
                for column, value in zip(self.header, record, strict=False):
                    if has_unstorable(value):
                        message = "must not contain NUL (U+0000) characters"
                        errors.add(number, column, message, "string_unstorable")
                if errors.has(number):
                    continue
            yield (
                number,
                {
                    column: restore(value) if value[:1] == QUOTE else value
                    for column, value in zip(self.header, record, strict=False)
                },
            )


def read_csv(body: bytes) -> CsvTable:
    """Parse `body`; a file that cannot be read (not UTF-8, no header, broken quoting) is a
    422 at once."""
    text = _decoded(body)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    number = 0
    try:
        for number, record in enumerate(reader, start=1):  # read after the loop
            if header is None:
                header = [name.strip() for name in record]
            elif any(value.strip() for value in record):
                records.append((number, record))
            # else a blank row: spreadsheets leave them, and they count as rows
    except csv.Error as exc:
        raise InvalidInputError(
            f"The file is not valid CSV near row {number + 1}: {exc}.",
            errors=[FieldError(field=cell_field(number + 1), message=str(exc), type="csv")],
        ) from exc
    if not header or not any(header):
        raise InvalidInputError(
            "The file is empty: its first row must name the columns.",
            errors=[FieldError(field=cell_field(1), message="no header row", type="missing")],
        )
    return CsvTable(header, records, has_nul="\x00" in text)


def check_header(
    header: Sequence[str],
    accepted: Iterable[str],
    required: Iterable[str],
    errors: CsvErrors,
) -> None:
    """Every column known and named once, the required ones present: errors on row 1."""
    known = set(accepted)
    seen: set[str] = set()
    for column in header:
        if column not in known:
            expected = ", ".join(sorted(known))
            errors.add(1, column, f"unknown column; the columns are: {expected}", "unknown_column")
        elif column in seen:
            errors.add(1, column, "named twice", "duplicate_column")
        seen.add(column)
    for column in required:
        if column not in seen:
            errors.add(1, column, "required column missing", "missing")


def given(cells: Mapping[str, str], columns: Iterable[str]) -> dict[str, str]:
    """The cells of `columns` that hold something: an empty cell is not given (a create gets
    the default, an update leaves the value as it is)."""
    wanted = set(columns)
    return {column: value for column, value in cells.items() if column in wanted and value.strip()}
