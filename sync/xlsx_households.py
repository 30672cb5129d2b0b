"""Streaming reader for household workbooks (.xlsx) with the columns of the offices' CSV.

Offices' data arrives as Excel workbooks: exports of the national system, of village
information systems, their own sheets. This reads them with openpyxl in read-only mode
(rows stream from the zip, memory stays flat) and hands the rows to the same grouping,
validation and rounding checks as the CSV (`simpul.sync.csv_households`), so both give the
same households and the same row-level rejections. Line numbers are the sheet's row numbers.

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
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException

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


def sheet_rows(path: Path) -> tuple[list[str], Iterator[SourceRow]]:
    """The header's column names and the data rows (as the CSV would carry them) of the
    workbook's household sheet; CsvFormatError (raised here, not by iteration) when there
    is none. The rows can be parsed in one process and grouped in another."""
    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise CsvFormatError(f"{path.name} is not a readable .xlsx workbook: {exc}") from None
    try:
        sheet, header_row, columns = _find_header(workbook)
    except BaseException:
        workbook.close()
        raise
    log.info("xlsx sheet=%r header_row=%d columns=%d", sheet.title, header_row, len(columns))
    return columns, _sheet_rows(workbook, sheet, header_row, len(columns))


def count_sheet_rows(path: Path) -> int:
    """Rows after the first row of the longest sheet, as the sheets' dimensions say: a
    cheap total for a progress bar (0 when the workbook does not say)."""
    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError):
        return 0
    try:
        return max([(sheet.max_row or 1) - 1 for sheet in workbook.worksheets] + [0])
    finally:
        workbook.close()


def _find_header(workbook: Any) -> tuple[Any, int, list[str]]:
    first_columns: list[str] | None = None
    for sheet in workbook.worksheets:
        rows = sheet.iter_rows(max_row=HEADER_SEARCH_ROWS, values_only=True)
        for number, cells in enumerate(rows, start=1):
            columns = normalised_header(cells)
            while columns and not columns[-1]:
                columns.pop()
            if first_columns is None and any(columns):
                first_columns = columns
            if all(name in columns for name in REQUIRED_COLUMNS):
                check_columns(columns, f"sheet {sheet.title!r}, row {number}")
                return sheet, number, columns
    if first_columns is None:
        raise CsvFormatError("the workbook has no sheet with a header row")
    check_columns(first_columns, "first sheet")  # raises, naming what is missing
    raise AssertionError("unreachable: check_columns accepted a header without every column")


def _sheet_rows(workbook: Any, sheet: Any, header_row: int, width: int) -> Iterator[SourceRow]:
    try:
        rows = sheet.iter_rows(min_row=header_row + 1, values_only=True)
        for number, cells in enumerate(rows, start=header_row + 1):
            texts = [_text(value) for value in cells[:width]]
            if len(texts) < width:
                texts.extend([""] * (width - len(texts)))
            yield number, texts
    finally:
        workbook.close()


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
    return str(value)
