"""Streaming reader for household workbooks (.xlsx) with the columns of the offices' CSV.

Offices' data arrives as Excel workbooks: exports of the national system, of village
information systems, their own sheets. This reads them with python-calamine (the calamine
reader, in Rust: a 50,000-household sheet of 4.3 million cells parses in about 3 s, where
openpyxl's read-only mode took 35 s, so a workbook imports about as fast as the same CSV)
and hands the rows to the same grouping, validation and rounding checks as the CSV
(`simpul.sync.csv_households`), so both give the same households and the same row-level
rejections. Line numbers are the sheet's row numbers. (openpyxl still writes workbooks:
sync/export_households.py.)

- The sheet: the first one whose header row (any of the first HEADER_SEARCH_ROWS rows, so a
  merged title row above it is fine) has every required column; other sheets are ignored.
- Numbers: a whole number is written in full (a NIK stored as a number is read exactly when
  the workbook holds it exactly). Spreadsheets (and openpyxl's writer) keep numbers as
  64-bit floats, which hold every whole number only up to 2**53: a larger number cell
  (NIKs of provinces 91-94) cannot be trusted and is given as Excel shows it, in
  scientific notation, so the row is refused with the spreadsheet hint. A cell rounded to
  15 digits below that is caught by the rounding check shared with the CSV.
- Dates: a date cell becomes dd/mm/yyyy; a date typed as text is read like the CSV's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from python_calamine import CalamineError, CalamineWorkbook

from simpul.sync.csv_households import (
    REQUIRED_COLUMNS,
    CsvFormatError,
    CsvHousehold,
    Rejection,
    SourceRow,
    check_columns,
    households_from_rows,
    normalised_header,
)

log = logging.getLogger(__name__)

HEADER_SEARCH_ROWS = 20
EXACT_FLOAT_LIMIT = 2**53  # whole numbers up to this are exact in a float (a spreadsheet cell)


def read_households_xlsx(path: Path) -> Iterator[CsvHousehold | Rejection]:
    """Read a workbook, yielding households and rejected rows in sheet order.

    Like `read_households_csv`, a `CsvFormatError` (not a workbook, no sheet with the
    columns) is raised by the call itself, not by iteration.
    """
    columns, rows = sheet_rows(path)
    return households_from_rows(rows, columns)


def _open(path: Path) -> CalamineWorkbook:
    try:
        return CalamineWorkbook.from_path(str(path))
    except (CalamineError, OSError, ValueError) as exc:
        raise CsvFormatError(f"{path.name} is not a readable .xlsx workbook: {exc}") from None


def sheet_rows(path: Path) -> tuple[list[str], Iterator[SourceRow]]:
    """The header's column names and the data rows (as the CSV would carry them) of the
    workbook's household sheet; CsvFormatError (raised here, not by iteration) when there
    is none. The rows can be parsed in one process and grouped in another."""
    sheet, header_row, columns = _find_header(_open(path))
    log.info("xlsx sheet=%r header_row=%d columns=%d", sheet.name, header_row, len(columns))
    return columns, _sheet_rows(sheet, header_row, len(columns))


def count_sheet_rows(path: Path) -> int:
    """Rows after the first row of the longest sheet: a total for a progress bar (0 when
    the workbook cannot be read)."""
    try:
        workbook = _open(path)
        return max(
            [workbook.get_sheet_by_name(name).height - 1 for name in workbook.sheet_names] + [0]
        )
    except (CsvFormatError, CalamineError, ValueError):
        return 0


def _find_header(workbook: CalamineWorkbook) -> tuple[Any, int, list[str]]:
    first_columns: list[str] | None = None
    for name in workbook.sheet_names:
        try:
            sheet = workbook.get_sheet_by_name(name)
        except (CalamineError, ValueError) as exc:
            raise CsvFormatError(f"sheet {name!r} cannot be read: {exc}") from None
        for number, cells in enumerate(sheet.iter_rows(), start=1):
            if number > HEADER_SEARCH_ROWS:
                break
            columns = normalised_header([_text(c) or None for c in cells])
            while columns and not columns[-1]:
                columns.pop()
            if first_columns is None and any(columns):
                first_columns = columns
            if all(column in columns for column in REQUIRED_COLUMNS):
                check_columns(columns, f"sheet {name!r}, row {number}")
                return sheet, number, columns
    if first_columns is None:
        raise CsvFormatError("the workbook has no sheet with a header row")
    check_columns(first_columns, "first sheet")  # raises, naming what is missing
    raise AssertionError("unreachable: check_columns accepted a header without every column")


def _sheet_rows(sheet: Any, header_row: int, width: int) -> Iterator[SourceRow]:
    for number, cells in enumerate(sheet.iter_rows(), start=1):
        if number <= header_row:
            continue
        texts = [_text(value) for value in cells[:width]]
        if len(texts) < width:
            texts.extend([""] * (width - len(texts)))
        yield number, texts


def _text(value: object) -> str:
    """A cell as the CSV would carry it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int | float):
        if value == int(value) and abs(value) <= EXACT_FLOAT_LIMIT:
            return str(int(value))
        # beyond 2**53 a spreadsheet's number (a 64-bit float) skips integers: not exact
        return f"{value:.5E}" if value == int(value) else repr(value)
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return f"{value.day:02d}/{value.month:02d}/{value.year}"
    return str(value)  # text, and a time of day or a duration as written
