"""The spreadsheet module's pure rules: which cells are neutralised, how values are written,
and what an import reads back."""

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum

import pytest

from backoffice.core.errors import InvalidInputError
from backoffice.core.spreadsheet import (
    CsvErrors,
    UnsupportedMediaTypeError,
    attachment,
    cell,
    neutralise,
    read_csv,
    require_csv,
    restore,
)


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+44 20", "'+44 20"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("'=1", "''=1"),  # already quoted: keeps its own quote through an import
        ("''=1", "'''=1"),
        ("'til dawn", "'til dawn"),
        ("A-1", "A-1"),
        ("a = b", "a = b"),
        ("", ""),
    ],
)
def test_a_text_that_would_run_as_a_formula_gets_a_quote_and_an_import_takes_it_off(
    text: str, written: str
) -> None:
    assert neutralise(text) == written
    assert restore(written) == text


def test_an_import_keeps_a_quote_that_no_export_could_have_added() -> None:
    assert restore("'plain") == "'plain"
    assert restore("'") == "'"


class Colour(StrEnum):
    RED = "red"
    MINUS = "-minus"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (-5, -5),  # a number is data, never a formula
        (Decimal("-0.50"), Decimal("-0.50")),
        (Decimal("89.90"), Decimal("89.90")),
        (datetime(2026, 12, 2, 9, 30, tzinfo=UTC), "2026-12-02T09:30:00Z"),
        (
            datetime(2026, 12, 2, 10, 30, 0, 5, tzinfo=timezone(timedelta(hours=1))),
            "2026-12-02T09:30:00.000005Z",
        ),
        (date(2030, 1, 31), "2030-01-31"),
        (Colour.RED, "red"),
        (Colour.MINUS, "'-minus"),
        ("-5", "'-5"),  # the same characters as text are neutralised
    ],
)
def test_values_are_written_as_the_json_api_shows_them(value: object, written: object) -> None:
    assert cell(value) == written


def test_the_file_name_carries_the_day() -> None:
    assert attachment("tasks", date(2026, 12, 2)) == 'attachment; filename="tasks-2026-12-02.csv"'


@pytest.mark.parametrize(
    "content_type", ["text/csv", "text/csv; charset=utf-8", 'TEXT/CSV; Charset="UTF8"']
)
def test_a_csv_body_in_utf8_is_accepted(content_type: str) -> None:
    require_csv(content_type)


@pytest.mark.parametrize(
    "content_type", [None, "", "application/json", "text/plain", "text/csv; charset=latin-1"]
)
def test_any_other_body_is_a_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        require_csv(content_type)


def test_rows_are_numbered_as_in_the_file_blank_and_multi_line_rows_included() -> None:
    body = b'sku,name\r\nA,one\r\n\r\n,\r\nB,"two\nlines"\r\nC,=x\r\nD,\'=y\r\n'
    errors = CsvErrors()

    rows = list(read_csv(body).rows(errors))

    assert [(number, cells["sku"]) for number, cells in rows] == [
        (2, "A"),
        (5, "B"),
        (6, "C"),
        (7, "D"),
    ]
    assert rows[3][1]["name"] == "=y"  # the export's quote taken off
    assert not errors


def test_missing_trailing_cells_are_empty_and_extra_ones_an_error() -> None:
    errors = CsvErrors()

    rows = list(read_csv(b"sku,name,price\nA\nB,x,1,2\n").rows(errors))

    assert rows == [(2, {"sku": "A"})]
    with pytest.raises(InvalidInputError) as refused:
        errors.raise_if_any()
    assert [error.field for error in refused.value.errors or []] == ["body.3"]


def test_an_import_lists_at_most_a_thousand_errors_and_says_how_many_there_are() -> None:
    errors = CsvErrors()
    for row in range(2, 1502):
        errors.add(row, "price", "bad", "value_error")

    with pytest.raises(InvalidInputError) as refused:
        errors.raise_if_any()

    assert len(refused.value.errors or []) == 1000
    assert "1500 error(s)" in refused.value.detail
    assert "The first 1000 of 1500" in refused.value.detail
