"""Streaming reader for the flat household CSV that district offices exchange.

One row per person, household columns repeated on every row of the household (the shape
`shared/data/households.py --format csv` writes), as offices really save it from Excel: comma
or semicolon separated, UTF-8 with or without BOM or Windows-1252, CRLF, header names in any
case, apostrophe-prefixed numbers, dd/mm/yyyy dates. Consecutive rows with the same household
key are grouped and validated with the same rules as the API (`simpul.sync.household`).
Bad rows become `Rejection`s with a line number and a reason naming the column; the rest of
the file is still read. Memory stays flat: one physical line and one household at a time.
"""

from __future__ import annotations

import csv
import logging
import re
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO

from simpul.sync.household import (
    FieldError,
    ValidationError,
    household_id,
    validate_fields,
    validate_member,
)

log = logging.getLogger(__name__)

ID_COLUMN = "ID KELUARGA"
KK_COLUMN = "NOMOR KK"
INFORMATIONAL_COLUMNS = ("PROVINSI", "KABUPATEN/KOTA", "KECAMATAN", "DESA/KELURAHAN")
MEMBER_COLUMNS = {
    "NIK": "nik",
    "NAMA": "nama",
    "TANGGAL LAHIR": "tanggal_lahir",
    "JENIS KELAMIN": "jenis_kelamin",
    "HUBUNGAN KELUARGA": "hubungan",
    "PEKERJAAN": "pekerjaan",
}
HOUSEHOLD_COLUMNS = {
    "KODE WILAYAH": "kode_wilayah",
    KK_COLUMN: "no_kk",
    "DUSUN": "dusun",
    "RT": "rt",
    "RW": "rw",
    "ALAMAT": "alamat",
    "DESIL": "desil",
    "STATUS USULAN": "status_usulan",
    "PROGRAM": "program",
}
RUMAH_COLUMNS = {
    "LANTAI": "lantai",
    "DINDING": "dinding",
    "ATAP": "atap",
    "SUMBER AIR": "sumber_air",
}
REQUIRED_COLUMNS = (*MEMBER_COLUMNS, *HOUSEHOLD_COLUMNS, *RUMAH_COLUMNS)
_HOUSEHOLD_CELLS = (*HOUSEHOLD_COLUMNS, *RUMAH_COLUMNS)

SPREADSHEET_HINT = (
    "in Excel or LibreOffice format the NIK and NOMOR KK columns as Text (Format Cells > "
    "Text) before typing or pasting the numbers, then save again; the numbers already "
    "rounded must come from the original source"
)
ROUNDING_REACH = 100  # values before and after a row that judge whether it was rounded
ROUNDING_MIN_VALUES = 4  # fewer values are too few to call a column rounded
MEMBERS = "anggota"
ZIP_MAGIC = b"PK\x03\x04"  # .xlsx (a zip archive)

MAX_LINE_BYTES = 1 << 20
_CHUNK_BYTES = 1 << 20

# field path (indexes removed) -> CSV column, to name the column in a rejection
_FIELD_COLUMNS = {
    **{f: c for c, f in MEMBER_COLUMNS.items()},
    **{f: c for c, f in HOUSEHOLD_COLUMNS.items()},
    **{f"rumah.{f}": c for c, f in RUMAH_COLUMNS.items()},
    "rumah": "LANTAI/DINDING/ATAP/SUMBER AIR",
}
_SCIENTIFIC_RE = re.compile(r"[0-9]+(?:[.,][0-9]+)?E[+-]?[0-9]+", re.IGNORECASE)
_IDENTIFIER_RE = re.compile(r"[0-9]{16}")
_DMY_RE = re.compile(r"([0-9]{1,2})[/-]([0-9]{1,2})[/-]([0-9]{4})")
_YMD_RE = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")
_PROGRAM_SPLIT_RE = re.compile(r"[,;|]")
_INDEX_RE = re.compile(r"\[[0-9]+\]")
_DELIMITERS = (",", ";")


@dataclass(frozen=True)
class Rejection:
    """A row that was not imported, and why."""

    line: int  # 1-based physical line number in the file (header is line 1)
    reason: str  # names the column and what to fix
    nik: str = ""  # the row's NIK and KK cells as read, for the rounding check
    kk: str = ""


@dataclass
class CsvHousehold:
    """A validated household built from consecutive rows with the same key."""

    line: int  # physical line of its first row
    household: dict  # normalised by validate_household(); "id" only if ID KELUARGA is a UUID
    member_lines: list[int] = field(default_factory=list)  # the line of each member's row
    # province, regency, district and village names of its region code, when the file has
    # those columns (PROVINSI, KABUPATEN/KOTA, KECAMATAN, DESA/KELURAHAN)
    region_names: tuple[str, ...] | None = None


class CsvFormatError(Exception):
    """The whole file is unusable (no header, required columns missing, not text)."""


# A data row from a source: (its first line or sheet row, its cells), or a row the source
# could not read at all
SourceRow = tuple[int, list[str]] | Rejection


@dataclass
class _Group:
    key: tuple[str, str]
    line: int
    household_id: str = ""
    fields: dict | None = None  # validated household columns of the first row that had them
    raw: tuple[str, ...] = ()  # its cells as read, to skip re-validating identical rows
    fields_line: int = 0
    members: list[dict] = field(default_factory=list)
    member_lines: list[int] = field(default_factory=list)
    region_names: tuple[str, ...] | None = None
    nik_lines: dict[str, int] = field(default_factory=dict)


def count_data_lines(path: Path) -> int:
    """Physical lines after the header (rows after the first, for a workbook): a cheap total
    for a progress bar.

    Compare with the `line` of what `read_households_csv` yields (data starts on line 2).
    """
    if is_workbook(path):
        from simpul.sync.xlsx_households import count_sheet_rows  # openpyxl only if needed

        return count_sheet_rows(path)
    lines = 0
    last = b"\n"
    with path.open("rb") as raw:
        while chunk := raw.read(_CHUNK_BYTES):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return max(lines - 1, 0)


def read_households_csv(path: Path) -> Iterator[CsvHousehold | Rejection]:
    """Read the offices' CSV, yielding households and rejected rows in file order.

    The header is read before this returns, so a `CsvFormatError` is raised by the call
    itself, not by iteration. Consecutive rows with the same key ("ID KELUARGA" when that
    cell is filled, else "NOMOR KK") form one household; a key that reappears later yields
    another `CsvHousehold` for the same key, which the caller merges. A household whose rows
    were all rejected yields nothing.
    """
    raw = path.open("rb")
    try:
        delimiter, columns = _read_header(raw)
    except BaseException:
        raw.close()
        raise
    return households_from_rows(_csv_rows(raw, delimiter, len(columns)), columns)


def read_households_file(path: Path) -> Iterator[CsvHousehold | Rejection]:
    """`read_households_csv`, or the workbook reader for an Excel .xlsx file."""
    if is_workbook(path):
        from simpul.sync.xlsx_households import read_households_xlsx  # openpyxl only if needed

        return read_households_xlsx(path)
    return read_households_csv(path)


def is_workbook(path: Path) -> bool:
    """Whether the file is a zip archive, as an .xlsx workbook is."""
    with path.open("rb") as raw:
        return raw.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def normalised_header(names: Iterable[object]) -> list[str]:
    """Header cells as column names: spaces collapsed, upper case ("" for an empty cell)."""
    return [" ".join(str(name or "").split()).upper() for name in names]


def check_columns(columns: list[str], where: str) -> None:
    """Raise CsvFormatError for repeated or missing required columns (`where`: separator or
    sheet, for the message)."""
    named = [c for c in columns if c]
    duplicates = sorted({c for c in named if named.count(c) > 1})
    if duplicates:
        raise CsvFormatError(f"the header repeats column(s): {', '.join(duplicates)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise CsvFormatError(
            f"required column(s) missing from the header: {', '.join(missing)} "
            f"(found: {', '.join(named) or 'none'}; {where})"
        )


def _read_header(raw: BinaryIO) -> tuple[str, list[str]]:
    line = raw.readline(MAX_LINE_BYTES)
    if not line.strip():
        raise CsvFormatError("the file is empty or its first line is blank; expected a header")
    if line.startswith(ZIP_MAGIC):
        raise CsvFormatError("this is an Excel .xlsx workbook; import it as a .xlsx file")
    if line.startswith(b"\xd0\xcf\x11\xe0"):
        raise CsvFormatError(
            "this is an old Excel .xls workbook; save it as 'Excel Workbook (.xlsx)' or 'CSV UTF-8'"
        )
    if line.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CsvFormatError("the file is UTF-16 ('Unicode Text'); save it as 'CSV UTF-8'")
    if not line.endswith(b"\n") and len(line) == MAX_LINE_BYTES:
        raise CsvFormatError(f"the header line is longer than {MAX_LINE_BYTES} bytes")
    text = _decode(line)
    if text is None:
        raise CsvFormatError("the header is neither UTF-8 nor Windows-1252 text")
    text = text.removeprefix("\ufeff")
    delimiter = max(_DELIMITERS, key=text.count)
    columns = normalised_header(next(csv.reader([text], delimiter=delimiter)))
    check_columns(columns, f"separator {delimiter!r}")
    log.info("CSV header: %d columns, separator %r", len(columns), delimiter)
    return delimiter, columns


def _decode(line: bytes) -> str | None:
    """UTF-8 if it is, else Windows-1252 (what Excel writes on Windows), else None."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return line.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


def _physical_lines(raw: BinaryIO, bad: dict[int, str]) -> Iterator[str]:
    """Decode line by line from line 2; record undecodable or oversized lines in `bad`."""
    number = 1
    fallback_logged = False
    while line := raw.readline(MAX_LINE_BYTES):
        number += 1
        if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := raw.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            bad[number] = f"the line is longer than {MAX_LINE_BYTES} bytes"
            yield "\n"
            continue
        try:
            yield line.decode("utf-8")
            continue
        except UnicodeDecodeError:
            pass
        text = _decode(line)
        if text is None:
            bad[number] = "the line is neither UTF-8 nor Windows-1252 text"
            yield "\n"
            continue
        if not fallback_logged:
            log.info("line %d is not UTF-8; reading it as Windows-1252", number)
            fallback_logged = True
        yield text


def _csv_rows(raw: BinaryIO, delimiter: str, width: int) -> Iterator[SourceRow]:
    """The CSV's data rows as `(first line, cells)`, or a Rejection for an unreadable one."""
    bad: dict[int, str] = {}
    with raw:
        reader = csv.reader(_physical_lines(raw, bad), delimiter=delimiter)
        end = 1
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                end = 1 + reader.line_num
                yield Rejection(start, f"{_span(start, end)} could not be read as CSV: {exc}")
                continue
            end = 1 + reader.line_num
            broken = [bad.pop(n) for n in range(start, end + 1) if n in bad]
            if broken:
                yield Rejection(start, f"{_span(start, end)}: {'; '.join(broken)}")
                continue
            if not "".join(row).strip():
                continue
            if len(row) < width or "".join(row[width:]).strip():
                yield Rejection(
                    start,
                    f"{_span(start, end)} has {len(row)} columns but the header has {width}"
                    + ("; check for an unmatched quote" if end > start else ""),
                )
                continue
            yield start, row


def households_from_rows(
    rows: Iterator[SourceRow], columns: list[str]
) -> Iterator[CsvHousehold | Rejection]:
    """Group and validate data rows (from a CSV or a sheet) into households, then refuse
    identifiers that a spreadsheet rounded (see `refuse_rounded`)."""
    return refuse_rounded(_grouped(rows, columns))


def _grouped(rows: Iterator[SourceRow], columns: list[str]) -> Iterator[CsvHousehold | Rejection]:
    index = {name: i for i, name in enumerate(columns) if name}
    wanted = [c for c in (ID_COLUMN, *REQUIRED_COLUMNS, *INFORMATIONAL_COLUMNS) if c in index]
    named_regions = all(c in index for c in INFORMATIONAL_COLUMNS)
    group: _Group | None = None
    id_warned = False
    for item in rows:
        if isinstance(item, Rejection):
            yield item
            continue
        start, row = item
        if not "".join(row).strip():
            continue
        values = {name: _clean(row[index[name]]) for name in wanted}
        household_id = values.get(ID_COLUMN, "")
        kk = values[KK_COLUMN]
        if not kk:
            yield Rejection(start, f"{KK_COLUMN} is empty; every row needs the family's KK")
            continue
        key = ("id", household_id.casefold()) if household_id else ("kk", kk)
        if group is None or key != group.key:
            if group is not None:
                yield from _finish(group)
            group = _Group(key=key, line=start, household_id=household_id)
            if named_regions:
                names = tuple(values[c] for c in INFORMATIONAL_COLUMNS)
                group.region_names = names if all(names) else None
            if household_id and not id_warned and not _is_uuid(household_id):
                log.warning(
                    "line %d: %s %r is not a UUID; such ids are ignored and those "
                    "households are matched by %s",
                    start,
                    ID_COLUMN,
                    household_id,
                    KK_COLUMN,
                )
                id_warned = True
        reasons = _add_row(group, values, start)
        if reasons:
            yield Rejection(start, "; ".join(reasons), values["NIK"], kk)
    if group is not None:
        yield from _finish(group)


def _span(start: int, end: int) -> str:
    return f"line {start}" if start == end else f"lines {start}-{end}"


def _clean(cell: str) -> str:
    text = cell.strip()
    if text.startswith("'"):
        text = text[1:].strip()
    return text


def _add_row(group: _Group, values: dict[str, str], line: int) -> list[str]:
    """Validate one row into `group`; return the reasons it is rejected (empty if taken)."""
    reasons: list[str] = []
    member: dict[str, object] = {}
    for column, name in MEMBER_COLUMNS.items():
        if name != "tanggal_lahir":
            member[name] = values[column]
    partial = False
    if _scientific(values["NIK"], "NIK", reasons):
        del member["nik"]
        partial = True
    born = values["TANGGAL LAHIR"]
    iso = _iso_date(born)
    if iso is None:
        reasons.append(
            f"TANGGAL LAHIR {born!r} is not a date (expected dd/mm/yyyy, dd-mm-yyyy or yyyy-mm-dd)"
        )
    elif not _is_real_date(iso):
        reasons.append(f"TANGGAL LAHIR {born!r} is not a real date")
    else:
        member["tanggal_lahir"] = iso
    if "tanggal_lahir" not in member:
        partial = True
    taken: dict | None = None
    try:
        taken = validate_member(member, partial=partial)
    except ValidationError as exc:
        reasons.extend(_reasons(exc.errors))

    raw = tuple(values[column] for column in _HOUSEHOLD_CELLS)
    if group.fields is None or raw != group.raw:  # the same cells as the reference row are fine
        reasons.extend(_household_reasons(group, values, raw, line))

    if taken is not None and "nik" in taken:
        first = group.nik_lines.get(taken["nik"])
        if first is not None:
            reasons.append(f"NIK {taken['nik']} already appears on line {first} in this household")
    if not reasons and taken is not None:
        group.members.append(taken)
        group.member_lines.append(line)
        group.nik_lines[taken["nik"]] = line
    return reasons


def _household_reasons(
    group: _Group, values: dict[str, str], raw: tuple[str, ...], line: int
) -> list[str]:
    """Validate the household columns; the first valid ones become the group's reference."""
    reasons: list[str] = []
    fields = _household_fields(values)
    if _scientific(values[KK_COLUMN], KK_COLUMN, reasons):
        del fields["no_kk"]
    try:
        validated = validate_fields(fields)
    except ValidationError as exc:
        return [*reasons, *_reasons(exc.errors)]
    if reasons:  # without a usable KK the row cannot be the reference
        return reasons
    if group.fields is None:
        group.fields, group.raw, group.fields_line = validated, raw, line
        return []
    return _disagreements(group.fields, group.fields_line, validated)


def _household_fields(values: dict[str, str]) -> dict[str, object]:
    fields: dict[str, object] = {name: values[column] for column, name in HOUSEHOLD_COLUMNS.items()}
    desil = values["DESIL"]
    fields["desil"] = int(desil) if desil.isascii() and desil.isdigit() else desil
    fields["program"] = [p.strip() for p in _PROGRAM_SPLIT_RE.split(values["PROGRAM"]) if p.strip()]
    fields["rumah"] = {name: values[column] for column, name in RUMAH_COLUMNS.items()}
    return fields


def _disagreements(reference: dict, reference_line: int, validated: dict) -> list[str]:
    """Household columns of this row against the group's reference row."""
    reasons = []
    for name, value in validated.items():
        there = reference[name]
        if name == "rumah":
            pairs = [(f"rumah.{k}", value[k], there[k]) for k in value]
        else:
            pairs = [(name, value, there)]
        for path, here, first in pairs:
            if here != first:
                reasons.append(
                    f"{_FIELD_COLUMNS[path]} {_show(here)} differs from {_show(first)} on line "
                    f"{reference_line}, the first row of this household; household columns "
                    "must be the same on every row of a household"
                )
    return reasons


def _show(value: object) -> str:
    return repr(",".join(value)) if isinstance(value, list) else repr(value)


def _finish(group: _Group) -> Iterator[CsvHousehold | Rejection]:
    if not group.members or group.fields is None:
        return
    # Every row's fields and member were validated as it was read (and duplicate NIKs
    # rejected), so the household is assembled without validating its members twice.
    canonical = household_id(group.household_id)
    head = {"id": canonical} if canonical else {}
    household = {**head, **group.fields, "anggota": group.members}
    yield CsvHousehold(group.line, household, group.member_lines, group.region_names)


def refuse_rounded(items: Iterator[CsvHousehold | Rejection]) -> Iterator[CsvHousehold | Rejection]:
    """Refuse NIKs and KK numbers that a spreadsheet rounded to 15 significant digits.

    A spreadsheet that keeps a 16-digit identifier as a number keeps 15 digits: the last
    one becomes 0. Real identifiers end in 0 about one time in ten, so where most of the
    values of a column around a row end in 0, the row's value ending in 0 is rounded. Each
    household is judged by the ROUNDING_REACH values before and after its own (memory stays
    flat, and a file pasted together from a good and a rounded source is judged part by
    part); a row whose NIK, or whose household's KK, is judged rounded is refused with a
    hint, the rest of its household is kept.
    """
    niks, kks = _Tally(), _Tally()
    pending: deque[tuple[CsvHousehold | Rejection, int, int, int]] = deque()
    for item in items:
        nik_from, kk_at = niks.total, kks.total
        if isinstance(item, CsvHousehold):
            kks.add(item.household["no_kk"])
            for member in item.household[MEMBERS]:
                niks.add(member["nik"])
        else:
            kks.add(item.kk)
            niks.add(item.nik)
        pending.append((item, nik_from, niks.total, kk_at))
        while pending and niks.total >= pending[0][2] + ROUNDING_REACH:
            yield from _judged(pending.popleft(), niks, kks)
        if pending:
            niks.forget_before(pending[0][1] - ROUNDING_REACH)
            kks.forget_before(pending[0][3] - ROUNDING_REACH)
    while pending:
        yield from _judged(pending.popleft(), niks, kks)


class _Tally:
    """Running count of identifiers ending in 0, for the values of a recent stretch."""

    def __init__(self) -> None:
        self.total = 0  # values seen
        self.base = 0  # index of the first value still held
        self._zeros_before = [0]  # zeros among values base.. (prefix sums)

    def add(self, value: str) -> None:
        if not _IDENTIFIER_RE.fullmatch(value):
            return
        self._zeros_before.append(self._zeros_before[-1] + value.endswith("0"))
        self.total += 1

    def forget_before(self, index: int) -> None:
        drop = index - self.base
        if drop > 4 * ROUNDING_REACH:  # trim now and then, not on every value
            del self._zeros_before[:drop]
            self.base = index

    def rounded_around(self, first: int, last: int) -> bool:
        """Whether most values from `first - REACH` to `last + REACH` end in 0."""
        low = max(first - ROUNDING_REACH, self.base)
        high = min(last + ROUNDING_REACH, self.total)
        count = high - low
        zeros = self._zeros_before[high - self.base] - self._zeros_before[low - self.base]
        return count >= ROUNDING_MIN_VALUES and zeros * 2 > count


def _judged(
    entry: tuple[CsvHousehold | Rejection, int, int, int], niks: _Tally, kks: _Tally
) -> Iterator[CsvHousehold | Rejection]:
    item, nik_from, nik_to, kk_at = entry
    if isinstance(item, Rejection):
        yield _with_rounding(item, niks.rounded_around(nik_from, nik_to), kks, kk_at)
        return
    household = item.household
    kk_bad = household["no_kk"].endswith("0") and kks.rounded_around(kk_at, kk_at + 1)
    nik_column = niks.rounded_around(nik_from, nik_to)
    if not (kk_bad or nik_column):
        yield item
        return
    kept, kept_lines = [], []
    for member, line in zip(household[MEMBERS], item.member_lines, strict=True):
        reasons = [_rounded_reason(KK_COLUMN, household["no_kk"])] if kk_bad else []
        if nik_column and member["nik"].endswith("0"):
            reasons.insert(0, _rounded_reason("NIK", member["nik"]))
        if reasons:
            log.info("import rounded identifier line=%d", line)
            yield Rejection(line, "; ".join(reasons) + "; " + SPREADSHEET_HINT)
        else:
            kept.append(member)
            kept_lines.append(line)
    if kept:
        kept_household = {**household, MEMBERS: kept}
        yield CsvHousehold(kept_lines[0], kept_household, kept_lines, item.region_names)


def _with_rounding(item: Rejection, nik_column: bool, kks: _Tally, kk_at: int) -> Rejection:
    """A row refused for another reason (a rounded NIK often no longer matches the birth
    date) also says its identifiers look rounded, so the hint is not missed."""
    reasons = []
    if nik_column and _IDENTIFIER_RE.fullmatch(item.nik) and item.nik.endswith("0"):
        reasons.append(_rounded_reason("NIK", item.nik))
    kk_shape = _IDENTIFIER_RE.fullmatch(item.kk) and item.kk.endswith("0")
    if kk_shape and kks.rounded_around(kk_at, kk_at + 1):
        reasons.append(_rounded_reason(KK_COLUMN, item.kk))
    if not reasons:
        return item
    reason = "; ".join([item.reason, *reasons, SPREADSHEET_HINT])
    return Rejection(item.line, reason, item.nik, item.kk)


def _rounded_reason(column: str, value: str) -> str:
    return (
        f"{column} {value} looks rounded: most {column} values near this row end in 0, "
        "which is what a spreadsheet does to a 16-digit number it keeps as a number "
        "(15 significant digits)"
    )


def _scientific(value: str, column: str, reasons: list[str]) -> bool:
    if not _SCIENTIFIC_RE.fullmatch(value):
        return False
    reasons.append(
        f"{column} {value!r} is in scientific notation (a spreadsheet turned it into a number "
        f"and kept 15 digits); {SPREADSHEET_HINT}"
    )
    return True


def _iso_date(text: str) -> str | None:
    """dd/mm/yyyy, d/m/yyyy, dd-mm-yyyy or yyyy-mm-dd as YYYY-MM-DD, unchecked; None if neither."""
    if match := _DMY_RE.fullmatch(text):
        day, month, year = match.groups()
    elif match := _YMD_RE.fullmatch(text):
        year, month, day = match.groups()
    else:
        return None
    return f"{year}-{int(month):02d}-{int(day):02d}"


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _is_real_date(iso: str) -> bool:
    try:
        date.fromisoformat(iso)
    except ValueError:
        return False
    return True


def _reasons(errors: list[FieldError]) -> list[str]:
    """FieldErrors as reasons prefixed with the CSV column they came from."""
    reasons = []
    for error in errors:
        path = _INDEX_RE.sub("", error.field).removeprefix("anggota.")
        reasons.append(f"{_FIELD_COLUMNS.get(path, path)}: {error.message}")
    return reasons
