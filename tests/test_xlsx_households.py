"""Workbooks (.xlsx) written by openpyxl read as the equivalent CSV: same households, or the
same row-level rejections (sync/xlsx_households.py, through read_households_file)."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook
from test_csv_households import HEADER, generate, row, wife, write_csv

from simpul.sync.csv_households import (
    SPREADSHEET_HINT,
    CsvFormatError,
    CsvHousehold,
    Rejection,
    count_data_lines,
    read_households_file,
)

NUMBER_COLUMNS = ("NIK", "NOMOR KK", "KODE WILAYAH", "RT", "RW", "DESIL")
Cell = Callable[[str, str], object]


def as_text(column: str, value: str) -> object:
    return value


def as_numbers(column: str, value: str) -> object:
    """Identifier and number columns as a spreadsheet keeps them when typed as numbers."""
    return int(value) if column in NUMBER_COLUMNS and value.isdigit() else value


def as_dates(column: str, value: str) -> object:
    if column == "TANGGAL LAHIR" and value:
        day, month, year = value.split("/")
        return datetime(int(year), int(month), int(day))
    return value


def write_xlsx(
    path: Path,
    rows: list[dict[str, str]],
    cell: Cell = as_text,
    *,
    notes_sheet_first: bool = False,
    title_above: bool = False,
    trailing_empty_row: bool = False,
) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    if notes_sheet_first:
        sheet.title = "Keterangan"
        sheet.append(["Data dari desa, dikirim Senin"])
        sheet.append(["NIK", "catatan"])
        sheet = workbook.create_sheet("Data")
    if title_above:
        sheet.append(["DAFTAR KELUARGA DESA 2013"])
        sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(HEADER))
    sheet.append(HEADER)
    for cells in rows:
        sheet.append([cell(column, cells.get(column, "")) for column in HEADER])
    if trailing_empty_row:
        sheet.append([None] * len(HEADER))
        sheet.append([""] * 3)
    for column_cells in sheet.iter_cols(min_row=sheet.max_row - len(rows), max_col=len(HEADER)):
        for one in column_cells:
            if isinstance(one.value, datetime):
                one.number_format = "DD/MM/YYYY"
    workbook.save(path)
    return path


def read(path: Path) -> tuple[list[CsvHousehold], list[Rejection]]:
    items = list(read_households_file(path))
    return (
        [i for i in items if isinstance(i, CsvHousehold)],
        [i for i in items if isinstance(i, Rejection)],
    )


def households(path: Path) -> list[dict]:
    found, rejections = read(path)
    assert rejections == []
    return [h.household for h in found]


@pytest.fixture(scope="module")
def generated() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(generate(60, "csv"))))


@pytest.mark.parametrize("cell", [as_text, as_numbers, as_dates], ids=["text", "numbers", "dates"])
def test_a_workbook_gives_the_households_of_the_same_csv(
    tmp_path: Path, generated: list[dict[str, str]], cell: Cell
) -> None:
    expected = households(write_csv(tmp_path / "h.csv", generated))
    assert len(expected) == 60
    assert households(write_xlsx(tmp_path / "h.xlsx", generated, cell)) == expected


def test_an_extra_sheet_a_merged_title_and_an_empty_trailing_row_change_nothing(
    tmp_path: Path, generated: list[dict[str, str]]
) -> None:
    expected = households(write_csv(tmp_path / "h.csv", generated))
    path = write_xlsx(
        tmp_path / "h.xlsx",
        generated,
        as_numbers,
        notes_sheet_first=True,
        title_above=True,
        trailing_empty_row=True,
    )
    found, rejections = read(path)
    assert rejections == []
    assert [h.household for h in found] == expected
    assert found[0].line == 3  # sheet rows: title, header, then the data
    assert count_data_lines(path) >= len(generated)


def test_merged_header_cells_leave_an_unnamed_column_that_is_ignored(tmp_path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    header = [*HEADER[:2], "CATATAN", None, *HEADER[2:]]
    sheet.append(header)
    sheet.merge_cells(start_row=1, start_column=3, end_row=1, end_column=4)
    for cells in (row(), wife()):
        values = [cells[c] for c in HEADER]
        sheet.append([*values[:2], "pindahan", "2019", *values[2:]])
    workbook.save(tmp_path / "merged.xlsx")
    expected = households(write_csv(tmp_path / "h.csv", [row(), wife()]))
    assert households(tmp_path / "merged.xlsx") == expected


def test_row_errors_are_the_csv_errors_on_the_same_rows(tmp_path: Path) -> None:
    rows = [row(), wife(DESIL="11"), wife(NIK="1709094303870000", TANGGAL_LAHIR="31/02/1987")]
    _, from_csv = read(write_csv(tmp_path / "h.csv", rows))
    _, from_xlsx = read(write_xlsx(tmp_path / "h.xlsx", rows))
    assert [r.line for r in from_xlsx] == [3, 4]
    assert from_xlsx == from_csv


def test_a_date_typed_as_text_and_a_date_cell_read_alike(tmp_path: Path) -> None:
    text = households(write_xlsx(tmp_path / "a.xlsx", [row(), wife()]))
    cells = households(write_xlsx(tmp_path / "b.xlsx", [row(), wife()], as_dates))
    assert text == cells
    assert text[0]["anggota"][1]["tanggal_lahir"] == "1987-03-03"


def test_numeric_identifiers_are_exact_where_the_workbook_holds_them_exactly(
    tmp_path: Path,
) -> None:
    def as_floats(column: str, value: str) -> object:
        return float(value) if column in ("NIK", "NOMOR KK") else value

    # whole numbers below 2**53 are exact in a float: the same household
    exact = households(write_xlsx(tmp_path / "f.xlsx", [row(), wife()], as_floats))
    assert exact == households(write_csv(tmp_path / "h.csv", [row(), wife()]))


def test_identifiers_a_spreadsheet_could_not_hold_are_refused_with_the_hint(
    tmp_path: Path, generated: list[dict[str, str]]
) -> None:
    def excel_numbers(column: str, value: str) -> object:
        """What Excel keeps of a typed 16-digit number: 15 significant digits."""
        if column in ("NIK", "NOMOR KK"):
            return float(f"{int(value):.15g}")
        return value

    found, rejections = read(write_xlsx(tmp_path / "x.xlsx", generated, excel_numbers))
    assert found == []
    assert len(rejections) == len(generated)
    assert all(r.reason.endswith(SPREADSHEET_HINT) for r in rejections)
    assert rejections[0].reason.startswith("NIK ") and "looks rounded" in rejections[0].reason

    # a NIK beyond what a float holds (province 91-94) cannot be exact: refused per row
    big = float(9171012103880001)
    workbook = Workbook()
    workbook.active.append(HEADER)
    workbook.active.append([big if c == "NIK" else v for c, v in row().items()])
    workbook.save(tmp_path / "big.xlsx")
    _, refused = read(tmp_path / "big.xlsx")
    assert [r.line for r in refused] == [2]
    assert "scientific notation" in refused[0].reason and SPREADSHEET_HINT in refused[0].reason


def test_a_workbook_without_the_columns_names_what_is_missing(tmp_path: Path) -> None:
    workbook = Workbook()
    workbook.active.append(["NIK", "NAMA"])
    workbook.active.append(["1709092103889682", "RUDI"])
    workbook.save(tmp_path / "few.xlsx")
    with pytest.raises(CsvFormatError, match=r"required column\(s\) missing.*NOMOR KK"):
        read_households_file(tmp_path / "few.xlsx")


def test_a_damaged_workbook_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(CsvFormatError, match=r"not a readable \.xlsx workbook"):
        read_households_file(path)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 10_000))
def test_a_workbook_cut_or_damaged_anywhere_is_its_rows_or_one_clear_error(
    cut: int, flip: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        whole = write_xlsx(Path(tmp) / "whole.xlsx", [row(), wife()]).read_bytes()
        damaged = bytearray(whole[: max(1, cut % len(whole))])
        damaged[flip % len(damaged)] ^= 0x55
        path = Path(tmp) / "damaged.xlsx"
        path.write_bytes(bytes(damaged))
        try:
            list(read_households_file(path))
        except CsvFormatError as exc:
            assert str(exc)  # one clear line, nothing else escapes
