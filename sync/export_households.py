"""Export households in the canonical JSON-lines shape, the offices' flat CSV shape, or an
Excel workbook (.xlsx) with region names, for the village meeting's list and re-keying.

The workbook has the columns `simpul import` reads (plus the region names), one row per
person, identifiers as text cells (a spreadsheet cannot round them) and birth dates as
date cells, so it imports back to the same households.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any, BinaryIO

from simpul.sync.regions import RegionNames

CSV_COLUMNS = [
    "ID KELUARGA",
    "KODE WILAYAH",
    "DUSUN",
    "RT",
    "RW",
    "ALAMAT",
    "NOMOR KK",
    "NIK",
    "NAMA",
    "TANGGAL LAHIR",
    "JENIS KELAMIN",
    "HUBUNGAN KELUARGA",
    "PEKERJAAN",
    "DESIL",
    "STATUS USULAN",
    "LANTAI",
    "DINDING",
    "ATAP",
    "SUMBER AIR",
    "PROGRAM",
]


REGION_COLUMNS = ["PROVINSI", "KABUPATEN/KOTA", "KECAMATAN", "DESA/KELURAHAN"]
XLSX_COLUMNS = [*CSV_COLUMNS[:2], *REGION_COLUMNS, *CSV_COLUMNS[2:]]
_TEXT_COLUMNS = {"ID KELUARGA", "KODE WILAYAH", "RT", "RW", "NOMOR KK", "NIK"}
_WIDTHS = {"ID KELUARGA": 38, "NIK": 19, "NOMOR KK": 19, "NAMA": 28, "ALAMAT": 28}


def public_shape(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record without server-side `_meta`, members keeping their stable ids."""
    return {k: v for k, v in record.items() if k != "_meta"}


def jsonl_line(record: Mapping[str, Any]) -> str:
    return json.dumps(public_shape(record), ensure_ascii=False, separators=(",", ":")) + "\n"


def csv_rows(record: Mapping[str, Any]) -> Iterator[list[str]]:
    """One row per member, household columns repeated, dates as dd/mm/yyyy."""
    rumah = record.get("rumah", {})
    for member in record.get("anggota", []):
        year, month, day = member["tanggal_lahir"].split("-")
        yield [
            record["id"],
            record["kode_wilayah"],
            record["dusun"],
            record["rt"],
            record["rw"],
            record["alamat"],
            record["no_kk"],
            member["nik"],
            member["nama"],
            f"{day}/{month}/{year}",
            member["jenis_kelamin"],
            member["hubungan"],
            member["pekerjaan"],
            str(record["desil"]),
            record["status_usulan"],
            rumah.get("lantai", ""),
            rumah.get("dinding", ""),
            rumah.get("atap", ""),
            rumah.get("sumber_air", ""),
            ",".join(record.get("program", [])),
        ]


class HouseholdWorkbook:
    """Households into one sheet ("Keluarga") of a new workbook, in openpyxl's write-only
    mode (rows go to a temporary file, not memory)."""

    def __init__(self, regions: Mapping[str, RegionNames]) -> None:
        from openpyxl import Workbook  # loaded only by the commands that write workbooks
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.styles import Font
        from openpyxl.utils import get_column_letter

        self._cell = WriteOnlyCell
        self.regions = regions
        self.households = 0
        self.workbook = Workbook(write_only=True)
        self.sheet = self.workbook.create_sheet("Keluarga")
        self.sheet.freeze_panes = "A2"
        for index, name in enumerate(XLSX_COLUMNS, start=1):
            width = _WIDTHS.get(name, max(len(name) + 2, 12))
            self.sheet.column_dimensions[get_column_letter(index)].width = width
        bold = Font(bold=True)
        header = []
        for name in XLSX_COLUMNS:
            cell = self._cell(self.sheet, value=name)
            cell.font = bold
            header.append(cell)
        self.sheet.append(header)

    def add(self, record: Mapping[str, Any]) -> None:
        names = self.regions.get(record["kode_wilayah"])
        region = list(names) if names else ["", "", "", ""]
        for row in csv_rows(record):
            values: dict[str, Any] = dict(zip(CSV_COLUMNS, row, strict=True))
            values.update(zip(REGION_COLUMNS, region, strict=True))
            day, month, year = values["TANGGAL LAHIR"].split("/")
            values["TANGGAL LAHIR"] = date(int(year), int(month), int(day))
            values["DESIL"] = int(values["DESIL"])
            self.sheet.append([self._typed(name, values[name]) for name in XLSX_COLUMNS])
        self.households += 1

    def _typed(self, name: str, value: Any) -> Any:
        cell = self._cell(self.sheet, value=value)
        if name in _TEXT_COLUMNS:
            cell.number_format = "@"  # text: a spreadsheet keeps all 16 digits
        elif isinstance(value, date):
            cell.number_format = "DD/MM/YYYY"
        return cell

    def save(self, out: BinaryIO | str) -> None:
        self.workbook.save(out)
