"""Office data on the command line (issue 14), as separate processes on real files: .xlsx
import, rounded identifiers refused with nothing wrong stored, operators and tokens
managed, `--data-dir` after the subcommand."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from conftest import generate, simpul_cli
from openpyxl import Workbook, load_workbook

from simpul.sync.csv_households import SPREADSHEET_HINT


def rows_of(count: int, seed: int = 13) -> list[list[str]]:
    return list(csv.reader(io.StringIO(generate(count, "csv", seed))))


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    if path.suffix == ".xlsx":
        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet("Data")
        for cells in rows:
            sheet.append(cells)
        workbook.save(path)
    else:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        path.write_text(out.getvalue(), encoding="utf-8")
    return path


def imported(data_dir: Path, path: Path) -> dict:
    result = simpul_cli(data_dir, "import", str(path), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def exported(data_dir: Path) -> list[dict]:
    """The node's households, members without their node-made ids, in id order."""
    result = simpul_cli(data_dir, "export", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    households = [json.loads(line) for line in result.stdout.splitlines()]
    for household in households:
        for member in household["anggota"]:
            del member["id"]
    return sorted(households, key=lambda h: h["id"])


def test_an_xlsx_import_stores_what_the_same_csv_stores_and_reimports_unchanged(
    tmp_path: Path,
) -> None:
    rows = rows_of(120)
    from_csv = imported(tmp_path / "a", write_rows(tmp_path / "h.csv", rows))
    xlsx = write_rows(tmp_path / "h.xlsx", rows)
    from_xlsx = imported(tmp_path / "b", xlsx)
    assert from_xlsx == from_csv
    assert (from_xlsx["created"], from_xlsx["rejected"]) == (120, [])
    assert exported(tmp_path / "b") == exported(tmp_path / "a")
    again = imported(tmp_path / "b", xlsx)
    assert (again["unchanged"], again["created"], again["updated"]) == (120, 0, 0)


def test_a_csv_with_rounded_identifiers_is_refused_row_by_row_and_nothing_wrong_stored(
    tmp_path: Path,
) -> None:
    header, *rows = rows_of(150)
    nik, kk = header.index("NIK"), header.index("NOMOR KK")
    first = len(rows) // 3
    while rows[first][kk] == rows[first - 1][kk]:
        first += 1  # the rounded part starts with a household
    originals = {(row[nik], row[kk]) for row in rows[first:]}
    for row in rows[first:]:  # as LibreOffice saves a column of numbers: 15 digits kept
        row[nik] = str(int(float(f"{int(row[nik]):.15g}")))
        row[kk] = str(int(float(f"{int(row[kk]):.15g}")))
    summary = imported(tmp_path / "node", write_rows(tmp_path / "saved.csv", [header, *rows]))
    refused = {r["line"]: r["reason"] for r in summary["rejected"]}
    for line in range(first + 2, len(rows) + 2):
        assert line in refused, line  # every rounded row: its KK ends in 0 now
        assert refused[line].endswith(SPREADSHEET_HINT)
    stored_niks = {m["nik"] for h in exported(tmp_path / "node") for m in h["anggota"]}
    stored_kks = {h["no_kk"] for h in exported(tmp_path / "node")}
    rounded_niks = {row[nik] for row in rows[first:]}
    rounded_kks = {row[kk] for row in rows[first:]}
    assert not stored_niks & (rounded_niks - {n for n, _ in originals})
    assert not stored_kks & (rounded_kks - {k for _, k in originals})


def simpul(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`simpul ARGS` with the options exactly where the test puts them."""
    return subprocess.run(
        [sys.executable, "-m", "simpul.node", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_operators_and_tokens_are_listed_disabled_reset_and_withdrawn(tmp_path: Path) -> None:
    data = str(tmp_path / "node")
    added = simpul("operator", "add", "sari", "--role", "operator", "--password-stdin",
                   "--data-dir", data, stdin="kata-sandi-1\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    token = simpul("token", "create", "sari", "--data-dir", data).stdout.strip()
    listed = simpul("operator", "list", "--data-dir", data)
    assert listed.stdout.split("\t")[:3] == ["sari", "operator", "active"]
    assert listed.stdout.strip().endswith("tokens: 1")
    tokens = simpul("token", "list", "--data-dir", data).stdout.splitlines()
    assert len(tokens) == 1 and token not in tokens[0]
    token_id = tokens[0].split("\t")[0]

    assert simpul("operator", "disable", "sari", "--data-dir", data).returncode == 0
    assert "\tdisabled since " in simpul("operator", "list", "--data-dir", data).stdout
    assert simpul("operator", "enable", "sari", "--data-dir", data).returncode == 0
    reset = simpul("--data-dir", data, "operator", "reset-password", "sari", "--password-stdin",
                   stdin="kata-sandi-2\n")  # fmt: skip
    assert reset.returncode == 0, reset.stderr

    withdrawn = simpul("token", "withdraw", token_id, f"--data-dir={data}")
    assert withdrawn.stdout.strip() == f"token {token_id} of sari withdrawn"
    assert simpul("token", "list", "--data-dir", data).stdout == ""
    again = simpul("token", "withdraw", token_id, "--data-dir", data)
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"Error: no API token with id '{token_id}'; see 'simpul token list'"
    )
    unknown = simpul("operator", "disable", "nobody", "--data-dir", data)
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "Error: no operator named 'nobody'")
    short = simpul("operator", "reset-password", "sari", "--password-stdin", "--data-dir", data,
                   stdin="pendek\n")  # fmt: skip
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    assert "Traceback" not in short.stderr + unknown.stderr + again.stderr


def test_data_dir_works_after_the_subcommand_of_node(tmp_path: Path) -> None:
    result = simpul("node", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:bad")
    assert result.returncode == 2
    assert "No such option" not in result.stderr
    assert "expected HOST:PORT" in result.stderr


def test_an_exported_workbook_reimports_to_identical_households(tmp_path: Path) -> None:
    rows = rows_of(80)
    imported(tmp_path / "a", write_rows(tmp_path / "h.csv", rows))
    book = tmp_path / "out.xlsx"
    result = simpul_cli(tmp_path / "a", "export", "--format", "xlsx", "--out", str(book))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"80 households written to {book}"
    again = imported(tmp_path / "a", book)
    assert (again["unchanged"], again["rejected"]) == (80, [])
    imported(tmp_path / "b", book)
    assert exported(tmp_path / "b") == exported(tmp_path / "a")

    sheet = load_workbook(book, read_only=True).worksheets[0]
    header, first = list(sheet.iter_rows(max_row=2, values_only=True))
    cells = dict(zip(header, first, strict=True))
    village = next(r for r in rows[1:] if r[0] == cells["ID KELUARGA"])
    assert cells["DESA/KELURAHAN"] == village[rows[0].index("DESA/KELURAHAN")]
    assert isinstance(cells["NIK"], str) and len(cells["NIK"]) == 16


def test_the_musdes_list_is_one_village_by_proposal_status(tmp_path: Path) -> None:
    header, *rows = rows_of(120)
    imported(tmp_path / "a", write_rows(tmp_path / "h.csv", [header, *rows]))
    kode, status = header.index("KODE WILAYAH"), header.index("STATUS USULAN")
    village, wanted = rows[0][kode], rows[0][status]
    expected = {
        r[header.index("ID KELUARGA")] for r in rows if (r[kode], r[status]) == (village, wanted)
    }
    book = tmp_path / "musdes.xlsx"
    result = simpul_cli(tmp_path / "a", "export", "--format", "xlsx", "--out", str(book),
                        "--village", village, "--status", wanted)  # fmt: skip
    assert result.returncode == 0, result.stderr
    ids = {r[0] for r in load_workbook(book, read_only=True).worksheets[0].iter_rows(
        min_row=2, values_only=True)}  # fmt: skip
    assert ids == expected
    no_file = simpul_cli(tmp_path / "a", "export", "--format", "xlsx")
    assert no_file.returncode == 2 and "--out FILE.xlsx" in no_file.stderr


def test_the_import_progress_bar_ends_at_100_percent(tmp_path: Path) -> None:
    """On a terminal (a pty here) the bar is drawn; its last state says 100%."""
    path = write_rows(tmp_path / "h.csv", rows_of(60))
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "simpul.node", "--data-dir", str(tmp_path / "node"),
         "import", str(path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower,
    ) as child:  # fmt: skip
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            drawn += chunk
        assert child.wait(timeout=120) == 0
    os.close(leader)
    states = [s for s in re.split(rb"[\r\n]", drawn) if b"Import" in s]
    assert states, drawn
    assert b"100%" in states[-1], states[-3:]
