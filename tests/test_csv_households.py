"""Tests for simpul.sync.csv_households: the offices' CSV as Excel really writes it."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from simpul.sync.csv_households import (
    ROUNDING_REACH,
    SPREADSHEET_HINT,
    CsvFormatError,
    CsvHousehold,
    Rejection,
    count_data_lines,
    read_households_csv,
)
from simpul.sync.household import validate_household

SHARED = Path(__file__).resolve().parents[2] / "shared"
GENERATOR = SHARED / "data" / "households.py"

HEADER = [
    "ID KELUARGA",
    "KODE WILAYAH",
    "PROVINSI",
    "KABUPATEN/KOTA",
    "KECAMATAN",
    "DESA/KELURAHAN",
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
ID_A = "af2529ca-d670-4838-a054-fa816e7c0c6a"
ID_B = "3c464110-8cce-4914-bda8-d02e93c38b33"
KK_A = "1709092001089854"
KK_B = "1702031904069718"
NIK_MAN = "1709092103889682"  # 21/03/1988, L
NIK_WOMAN = "1709094303879866"  # 03/03/1987, P
NIK_CHILD = "1709090508149405"  # 05/08/2014, L


def row(**cells: str) -> dict[str, str]:
    """A valid row of household A (the head); keyword names use _ for spaces and /."""
    base = {
        "ID KELUARGA": ID_A,
        "KODE WILAYAH": "1709092013",
        "PROVINSI": "BENGKULU",
        "KABUPATEN/KOTA": "BENGKULU TENGAH",
        "KECAMATAN": "KECAMATAN 09",
        "DESA/KELURAHAN": "DESA 2013",
        "DUSUN": "Mekarsari",
        "RT": "002",
        "RW": "003",
        "ALAMAT": "Jl. Anggrek No. 112",
        "NOMOR KK": KK_A,
        "NIK": NIK_MAN,
        "NAMA": "RUDI KURNIAWAN",
        "TANGGAL LAHIR": "21/03/1988",
        "JENIS KELAMIN": "L",
        "HUBUNGAN KELUARGA": "Kepala Keluarga",
        "PEKERJAAN": "Petani",
        "DESIL": "3",
        "STATUS USULAN": "diverifikasi",
        "LANTAI": "Keramik",
        "DINDING": "Kayu/Papan",
        "ATAP": "Ijuk/Rumbia",
        "SUMBER AIR": "Air Hujan",
        "PROGRAM": "BLT_DD,PBI_JKN",
    }
    for name, value in cells.items():
        base[name.replace("__", "/").replace("_", " ")] = value
    return base


def wife(**cells: str) -> dict[str, str]:
    defaults = {
        "NIK": NIK_WOMAN,
        "NAMA": "ROHANI SETIAWAN",
        "TANGGAL_LAHIR": "03/03/1987",
        "JENIS_KELAMIN": "P",
        "HUBUNGAN_KELUARGA": "Istri",
    }
    return row(**{**defaults, **cells})


def child(**cells: str) -> dict[str, str]:
    defaults = {
        "NIK": NIK_CHILD,
        "NAMA": "BAYU KURNIAWAN",
        "TANGGAL_LAHIR": "05/08/2014",
        "HUBUNGAN_KELUARGA": "Anak",
        "PEKERJAAN": "Pelajar/Mahasiswa",
    }
    return row(**{**defaults, **cells})


def other(**cells: str) -> dict[str, str]:
    """The head of household B."""
    defaults = {
        "ID_KELUARGA": ID_B,
        "KODE_WILAYAH": "1702032007",
        "NOMOR_KK": KK_B,
        "NIK": "1702032106859354",
        "NAMA": "DEDI PRATAMA",
        "TANGGAL_LAHIR": "21/06/1985",
        "ALAMAT": "Jl. Mawar No. 119",
    }
    return row(**{**defaults, **cells})


def write_csv(
    path: Path,
    rows: list[dict[str, str]],
    *,
    header: list[str] = HEADER,
    names: list[str] | None = None,
    delimiter: str = ",",
    newline: str = "\n",
    encoding: str = "utf-8",
) -> Path:
    """Write `rows` under `header`; `names` replaces the header text as written."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(names or header)
    for cells in rows:
        writer.writerow([cells.get(column, "") for column in header])
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def read(path: Path) -> tuple[list[CsvHousehold], list[Rejection]]:
    items = list(read_households_csv(path))
    households = [i for i in items if isinstance(i, CsvHousehold)]
    rejections = [i for i in items if isinstance(i, Rejection)]
    assert len(households) + len(rejections) == len(items)
    return households, rejections


def only_household(path: Path) -> dict:
    households, rejections = read(path)
    assert rejections == []
    assert len(households) == 1
    return households[0].household


def only_rejection(path: Path) -> Rejection:
    _, rejections = read(path)
    assert len(rejections) == 1, rejections
    return rejections[0]


# --- grouping and shape ---------------------------------------------------------------------


def test_consecutive_rows_form_one_normalised_household(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(), wife(), child(), other()])
    households, rejections = read(path)
    assert rejections == []
    assert [h.line for h in households] == [2, 5]
    first = households[0].household
    assert first == validate_household(first)
    assert first["id"] == ID_A
    assert first["no_kk"] == KK_A
    assert first["desil"] == 3
    assert first["program"] == ["BLT_DD", "PBI_JKN"]
    assert first["rumah"] == {
        "lantai": "Keramik",
        "dinding": "Kayu/Papan",
        "atap": "Ijuk/Rumbia",
        "sumber_air": "Air Hujan",
    }
    assert [m["nik"] for m in first["anggota"]] == [NIK_MAN, NIK_WOMAN, NIK_CHILD]
    assert first["anggota"][1]["tanggal_lahir"] == "1987-03-03"
    assert households[1].household["id"] == ID_B


def test_without_id_column_rows_are_grouped_by_kk_and_have_no_id(tmp_path: Path) -> None:
    header = [c for c in HEADER if c != "ID KELUARGA"]
    path = write_csv(tmp_path / "a.csv", [row(), wife(), other()], header=header)
    households, rejections = read(path)
    assert rejections == []
    assert [len(h.household["anggota"]) for h in households] == [2, 1]
    assert all("id" not in h.household for h in households)


def test_id_that_is_not_a_uuid_is_left_out_but_still_groups(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(ID_KELUARGA="KEL-001"), wife(ID_KELUARGA="KEL-001")])
    household = only_household(path)
    assert "id" not in household
    assert len(household["anggota"]) == 2


def test_empty_id_cell_falls_back_to_kk(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv", [row(ID_KELUARGA=""), wife(ID_KELUARGA=""), other(ID_KELUARGA="")]
    )
    households, _ = read(path)
    assert [h.household["no_kk"] for h in households] == [KK_A, KK_B]


def test_non_consecutive_repeated_key_yields_two_households(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(), other(), wife()])
    households, rejections = read(path)
    assert rejections == []
    assert [(h.line, h.household["no_kk"]) for h in households] == [
        (2, KK_A),
        (3, KK_B),
        (4, KK_A),
    ]
    assert households[2].household["anggota"][0]["nik"] == NIK_WOMAN


def test_informational_and_unknown_columns_are_dropped(tmp_path: Path) -> None:
    header = ["NO", *HEADER]
    path = write_csv(tmp_path / "a.csv", [{**row(), "NO": "1"}], header=header)
    household = only_household(path)
    assert not {"provinsi", "no", "PROVINSI"} & set(household)


def test_quoted_cell_with_a_line_break_keeps_physical_line_numbers(tmp_path: Path) -> None:
    rows = [row(ALAMAT="Jl. Anggrek\nNo. 112"), other(), other(NIK="1")]
    households, rejections = read(write_csv(tmp_path / "a.csv", rows))
    assert households[0].household["alamat"] == "Jl. Anggrek\nNo. 112"
    assert [h.line for h in households] == [2, 4]
    assert [r.line for r in rejections] == [5]


def test_blank_rows_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    write_csv(path, [row()])
    path.write_bytes(path.read_bytes() + b",,,,\n\n" + b",".join([b""] * len(HEADER)) + b"\n")
    assert len(only_household(path)["anggota"]) == 1


def test_trailing_empty_cells_beyond_the_header_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    write_csv(path, [row()])
    path.write_bytes(path.read_bytes().replace(b"\n", b",,\n").replace(b",,\n", b"\n", 1))
    assert only_household(path)["no_kk"] == KK_A


# --- quirks of files saved by Excel ---------------------------------------------------------


def test_semicolon_delimiter(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(), wife()], delimiter=";")
    assert b";" in path.read_bytes().splitlines()[0]
    household = only_household(path)
    assert household["program"] == ["BLT_DD", "PBI_JKN"]
    assert len(household["anggota"]) == 2


def test_utf8_bom(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row()], encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert only_household(path)["id"] == ID_A


def test_windows_1252_names(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(NAMA="José Muñoz")], encoding="cp1252")
    assert "é".encode("cp1252") in path.read_bytes()
    assert only_household(path)["anggota"][0]["nama"] == "JOSÉ MUÑOZ"


def test_utf8_names(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(NAMA="José Muñoz")])
    assert only_household(path)["anggota"][0]["nama"] == "JOSÉ MUÑOZ"


def test_crlf_line_endings_keep_line_numbers(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(), wife(NIK="123"), other()], newline="\r\n")
    assert b"\r\n" in path.read_bytes()
    households, rejections = read(path)
    assert [h.line for h in households] == [2, 4]
    assert [r.line for r in rejections] == [3]
    assert households[1].household["alamat"] == "Jl. Mawar No. 119"


def test_header_names_in_any_case_with_stray_spaces(tmp_path: Path) -> None:
    names = [f"  {c.lower().replace(' ', '   ')} " for c in HEADER]
    path = write_csv(tmp_path / "a.csv", [row()], names=names)
    assert only_household(path)["kode_wilayah"] == "1709092013"


def test_leading_apostrophes_are_stripped(tmp_path: Path) -> None:
    cells = row(NIK="'" + NIK_MAN, NOMOR_KK=" '" + KK_A, KODE_WILAYAH="'1709092013", RT="'02")
    household = only_household(write_csv(tmp_path / "a.csv", [cells]))
    assert household["anggota"][0]["nik"] == NIK_MAN
    assert household["no_kk"] == KK_A
    assert household["kode_wilayah"] == "1709092013"
    assert household["rt"] == "002"


def test_cells_are_stripped(tmp_path: Path) -> None:
    cells = row(NIK=f" {NIK_MAN} ", NAMA="  rudi kurniawan ", DESIL=" 3 ", LANTAI=" keramik ")
    household = only_household(write_csv(tmp_path / "a.csv", [cells]))
    assert household["anggota"][0]["nama"] == "RUDI KURNIAWAN"
    assert household["desil"] == 3
    assert household["rumah"]["lantai"] == "Keramik"


@pytest.mark.parametrize(
    ("cell", "iso", "nik"),
    [
        ("21/03/1988", "1988-03-21", NIK_MAN),
        ("21-03-1988", "1988-03-21", NIK_MAN),
        ("1988-03-21", "1988-03-21", NIK_MAN),
        ("5/8/2014", "2014-08-05", NIK_CHILD),
        ("05/08/2014", "2014-08-05", NIK_CHILD),
        ("5-8-2014", "2014-08-05", NIK_CHILD),
    ],
)
def test_date_formats(tmp_path: Path, cell: str, iso: str, nik: str) -> None:
    path = write_csv(tmp_path / "a.csv", [row(TANGGAL_LAHIR=cell, NIK=nik)])
    assert only_household(path)["anggota"][0]["tanggal_lahir"] == iso


@pytest.mark.parametrize("cell", ["1988/03/21", "21.03.1988", "21/03/88", "Maret 1988"])
def test_other_date_formats_are_rejected_with_the_expected_formats(
    tmp_path: Path, cell: str
) -> None:
    rejection = only_rejection(write_csv(tmp_path / "a.csv", [row(TANGGAL_LAHIR=cell)]))
    assert rejection.line == 2
    assert rejection.reason.startswith(f"TANGGAL LAHIR {cell!r} is not a date")
    assert "dd/mm/yyyy" in rejection.reason


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("PKH,SEMBAKO", ["PKH", "SEMBAKO"]),
        ("SEMBAKO; PKH", ["PKH", "SEMBAKO"]),
        ("PKH|BLT_DD", ["BLT_DD", "PKH"]),
        ("pkh", ["PKH"]),
        ("", []),
    ],
)
def test_program_separators(tmp_path: Path, cell: str, expected: list[str]) -> None:
    path = write_csv(tmp_path / "a.csv", [row(PROGRAM=cell)])
    assert only_household(path)["program"] == expected


def test_program_with_semicolons_in_a_semicolon_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(PROGRAM="PKH;SEMBAKO")], delimiter=";")
    assert only_household(path)["program"] == ["PKH", "SEMBAKO"]


def test_unknown_program_is_rejected(tmp_path: Path) -> None:
    rejection = only_rejection(write_csv(tmp_path / "a.csv", [row(PROGRAM="PKH,BANSOS")]))
    assert rejection.reason.startswith("PROGRAM:")
    assert "BANSOS" in rejection.reason


@pytest.mark.parametrize("cell", ["abc", "3.5", "0", "11", ""])
def test_bad_desil_is_rejected(tmp_path: Path, cell: str) -> None:
    rejection = only_rejection(write_csv(tmp_path / "a.csv", [row(DESIL=cell)]))
    assert rejection.reason.startswith("DESIL:")


# --- row-level rejections ----------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["1.70909E+15", "1,70909E+15", "1.709092103889E15"])
def test_nik_in_scientific_notation(tmp_path: Path, cell: str) -> None:
    path = write_csv(tmp_path / "a.csv", [row(), wife(NIK=cell)])
    households, rejections = read(path)
    assert len(households[0].household["anggota"]) == 1
    assert [r.line for r in rejections] == [3]
    assert rejections[0].reason == (
        f"NIK {cell!r} is in scientific notation (a spreadsheet turned it into a number "
        f"and kept 15 digits); {SPREADSHEET_HINT}"
    )


def test_kk_in_scientific_notation(tmp_path: Path) -> None:
    rejection = only_rejection(write_csv(tmp_path / "a.csv", [row(NOMOR_KK="1.70909E+15")]))
    assert rejection.reason.startswith("NOMOR KK '1.70909E+15' is in scientific notation")


@pytest.mark.parametrize("cell", ["170909210388968", "17090921038896821"])
def test_wrong_length_nik(tmp_path: Path, cell: str) -> None:
    rejection = only_rejection(write_csv(tmp_path / "a.csv", [row(NIK=cell)]))
    assert rejection.line == 2
    assert rejection.reason.startswith("NIK:")
    assert "16 digits" in rejection.reason


def test_impossible_date(tmp_path: Path) -> None:
    rejection = only_rejection(write_csv(tmp_path / "a.csv", [row(TANGGAL_LAHIR="31/02/1988")]))
    assert rejection.reason == "TANGGAL LAHIR '31/02/1988' is not a real date"


def test_nik_disagreeing_with_the_birth_date_names_the_nik_column(tmp_path: Path) -> None:
    rejection = only_rejection(write_csv(tmp_path / "a.csv", [row(TANGGAL_LAHIR="22/03/1988")]))
    assert rejection.reason.startswith("NIK:")
    assert "1988-03-22" in rejection.reason


def test_missing_kk(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(), wife(NOMOR_KK="")])
    households, rejections = read(path)
    assert len(households[0].household["anggota"]) == 1
    assert [(r.line, r.reason.split(";")[0]) for r in rejections] == [(3, "NOMOR KK is empty")]


@pytest.mark.parametrize("cell", ["170909201", "17090920130", "17.09.09.2013", ""])
def test_malformed_region_code(tmp_path: Path, cell: str) -> None:
    rejection = only_rejection(write_csv(tmp_path / "a.csv", [row(KODE_WILAYAH=cell)]))
    assert rejection.reason.startswith("KODE WILAYAH:")
    assert "10 digits" in rejection.reason


def test_household_column_disagreeing_with_the_first_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(), wife(ALAMAT="Jl. Mawar No. 1"), child()])
    households, rejections = read(path)
    assert [m["nik"] for m in households[0].household["anggota"]] == [NIK_MAN, NIK_CHILD]
    assert households[0].household["alamat"] == "Jl. Anggrek No. 112"
    assert len(rejections) == 1
    assert rejections[0].line == 3
    assert rejections[0].reason.startswith("ALAMAT 'Jl. Mawar No. 1' differs from")
    assert "line 2" in rejections[0].reason


def test_household_columns_are_compared_after_normalisation(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv", [row(), wife(RT="2", LANTAI="KERAMIK", PROGRAM="PBI_JKN;BLT_DD")]
    )
    assert len(only_household(path)["anggota"]) == 2


def test_disagreeing_rumah_and_program_columns_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(), wife(ATAP="Seng", PROGRAM="PKH")])
    rejection = only_rejection(path)
    assert "ATAP 'Seng' differs" in rejection.reason
    assert "PROGRAM 'PKH' differs" in rejection.reason


def test_first_valid_household_columns_are_the_reference(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(RT="12345"), wife(), child(RT="9")])
    households, rejections = read(path)
    assert [r.line for r in rejections] == [2, 4]
    assert rejections[0].reason.startswith("RT:")
    assert "line 3" in rejections[1].reason
    assert households[0].household["anggota"][0]["nik"] == NIK_WOMAN
    assert households[0].line == 2


def test_wrong_column_count(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    write_csv(path, [row()])
    short = ",".join(list(row().values())[:-1])
    path.write_bytes(path.read_bytes() + short.encode() + b"\n")
    households, rejections = read(path)
    assert len(households) == 1
    assert [(r.line, r.reason) for r in rejections] == [
        (3, f"line 3 has {len(HEADER) - 1} columns but the header has {len(HEADER)}")
    ]


def test_unmatched_quote_is_a_rejection_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    write_csv(path, [row()])
    broken = ",".join(list(wife().values())).replace("Jl. Anggrek", '"Jl. Anggrek')
    path.write_bytes(path.read_bytes() + broken.encode() + b"\n" + b"x,y\n")
    households, rejections = read(path)
    assert len(households) == 1
    assert len(rejections) == 1
    assert rejections[0].line == 3
    assert "unmatched quote" in rejections[0].reason


def test_duplicate_nik_within_a_household(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(), wife(), row(NAMA="RUDI K")])
    households, rejections = read(path)
    assert len(households[0].household["anggota"]) == 2
    assert [(r.line, r.reason) for r in rejections] == [
        (4, f"NIK {NIK_MAN} already appears on line 2 in this household")
    ]


def test_a_row_can_carry_several_reasons(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(NIK="1.7E+15", JENIS_KELAMIN="X", DUSUN="")])
    reason = only_rejection(path).reason
    assert "NIK '1.7E+15'" in reason
    assert "JENIS KELAMIN:" in reason
    assert "DUSUN:" in reason


def test_household_with_no_valid_row_yields_nothing(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row(NIK="1"), wife(NIK="2"), other()])
    households, rejections = read(path)
    assert [h.household["no_kk"] for h in households] == [KK_B]
    assert [r.line for r in rejections] == [2, 3]


def test_undecodable_line_is_rejected_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    write_csv(path, [row(NAMA="RUDI\x01"), wife()])
    path.write_bytes(path.read_bytes().replace(b"\x01", b"\x81"))
    households, rejections = read(path)
    assert [r.line for r in rejections] == [2]
    assert "neither UTF-8 nor Windows-1252" in rejections[0].reason
    assert [m["nik"] for m in households[0].household["anggota"]] == [NIK_WOMAN]


def test_a_windows_1252_line_in_a_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    write_csv(path, [row(NAMA="José"), other(NAMA="Muñoz")])
    data = path.read_bytes().replace("Muñoz".encode(), "Muñoz".encode("cp1252"))
    path.write_bytes(data)
    households, _ = read(path)
    assert [h.household["anggota"][0]["nama"] for h in households] == ["JOSÉ", "MUÑOZ"]


# --- whole-file errors ----------------------------------------------------------------------


def test_missing_required_columns_are_named_when_called(tmp_path: Path) -> None:
    header = [c for c in HEADER if c not in ("NIK", "SUMBER AIR")]
    path = write_csv(tmp_path / "a.csv", [row()], header=header)
    with pytest.raises(CsvFormatError, match="NIK, SUMBER AIR"):
        read_households_csv(path)


def test_id_column_is_optional_but_kk_is_not(tmp_path: Path) -> None:
    header = [c for c in HEADER if c != "NOMOR KK"]
    path = write_csv(tmp_path / "a.csv", [row()], header=header)
    with pytest.raises(CsvFormatError, match="NOMOR KK"):
        read_households_csv(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"\n" + b"x,y\n", "empty"),
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel .xlsx workbook"),
        ("NIK\tNAMA\n".encode("utf-16"), "UTF-16"),
        (b"\x81\x8d\x8f\x90\x9d,NIK\n", "neither UTF-8 nor Windows-1252"),
    ],
)
def test_unusable_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(content)
    with pytest.raises(CsvFormatError, match=match):
        read_households_csv(path)


def test_repeated_header_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [], header=[*HEADER, "nik"])
    with pytest.raises(CsvFormatError, match=r"repeats column.*NIK"):
        read_households_csv(path)


def test_header_only_yields_nothing(tmp_path: Path) -> None:
    assert read(write_csv(tmp_path / "a.csv", [])) == ([], [])


# --- count_data_lines -------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_count_data_lines(tmp_path: Path, newline: str) -> None:
    path = write_csv(tmp_path / "a.csv", [row(), wife(), other()], newline=newline)
    assert count_data_lines(path) == 3
    path.write_bytes(path.read_bytes().rstrip())
    assert count_data_lines(path) == 3


def test_count_data_lines_of_empty_and_header_only_files(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"")
    assert count_data_lines(path) == 0
    path.write_bytes(b"NIK,NAMA\n")
    assert count_data_lines(path) == 0


# --- round trip against the generator ----------------------------------------------------------


def generate(count: int, fmt: str) -> str:
    return subprocess.run(
        [sys.executable, str(GENERATOR), "--count", str(count), "--format", fmt],
        check=True,
        capture_output=True,
        text=True,
        encoding="utf-8",
    ).stdout


def test_generator_csv_reads_back_as_its_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "households.csv"
    path.write_text(generate(300, "csv"), encoding="utf-8")
    households, rejections = read(path)
    assert rejections == []
    expected = [
        validate_household(json.loads(line)) for line in generate(300, "jsonl").splitlines()
    ]
    assert len(expected) == 300
    assert [h.household for h in households] == expected
    assert count_data_lines(path) == sum(len(h["anggota"]) for h in expected)


# --- identifiers a spreadsheet rounded ---------------------------------------------------------


def rounded(digits: str) -> str:
    """A 16-digit number as a spreadsheet keeps it when the column is a number: 15
    significant digits, written back without exponent."""
    return str(int(float(f"{int(digits):.15g}")))


def test_rounded_niks_and_kks_are_refused_row_by_row_with_the_spreadsheet_hint(
    tmp_path: Path,
) -> None:
    rows = list(csv.DictReader(io.StringIO(generate(80, "csv"))))
    for cells in rows:
        cells["NIK"], cells["NOMOR KK"] = rounded(cells["NIK"]), rounded(cells["NOMOR KK"])
    path = write_csv(tmp_path / "saved-by-a-spreadsheet.csv", rows)
    households, rejections = read(path)
    assert households == []
    assert [r.line for r in rejections] == list(range(2, len(rows) + 2))
    for rejection, cells in zip(rejections, rows, strict=True):
        assert rejection.reason.startswith(f"NIK {cells['NIK']} looks rounded")
        assert f"NOMOR KK {cells['NOMOR KK']} looks rounded" in rejection.reason
        assert rejection.reason.endswith(SPREADSHEET_HINT)


def test_only_the_rounded_part_of_a_pasted_together_file_is_refused(tmp_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(generate(200, "csv"))))
    half = len(rows) // 2
    while rows[half]["NOMOR KK"] == rows[half - 1]["NOMOR KK"]:
        half += 1  # cut between households
    for cells in rows[half:]:
        cells["NIK"] = rounded(cells["NIK"])
    households, rejections = read(write_csv(tmp_path / "a.csv", rows))
    refused = {r.line for r in rejections}
    good_niks = {m["nik"] for h in households for m in h.household["anggota"]}
    # on the good side only a value ending in 0 close to the rounded part may be refused
    # (refusing a good number costs a re-save; taking a rounded one costs a wrong record)
    assert all(
        half + 2 - ROUNDING_REACH <= line and rows[line - 2]["NIK"].endswith("0")
        for line in refused
        if line < half + 2
    )
    for line, cells in enumerate(rows[half:], start=half + 2):
        assert (line in refused) == cells["NIK"].endswith("0")
    for line, cells in enumerate(rows, start=2):
        assert (cells["NIK"] in good_niks) != (line in refused)
