"""`simpul import` / `export` / `status` as separate processes on real files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import aiohttp
from conftest import generate, make_token, simpul_cli, start_node_process


def write_csv(path: Path, count: int, seed: int = 13) -> Path:
    path.write_text(generate(count, "csv", seed), encoding="utf-8")
    return path


def status(data_dir: Path) -> dict:
    result = simpul_cli(data_dir, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_import_reports_and_reimport_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "node"
    csv_file = write_csv(tmp_path / "h.csv", 200)
    rows = len(csv_file.read_text().splitlines()) - 1
    first = simpul_cli(data, "import", str(csv_file), "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["households"], summary["persons"], summary["rejected"]) == (200, rows, [])
    before = status(data)
    assert before["records"] == 200
    again = json.loads(simpul_cli(data, "import", str(csv_file), "--json").stdout)
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 200)
    assert status(data) == before


def test_import_quirky_excel_file_rejects_bad_rows_by_line(tmp_path: Path) -> None:
    header, *rows = csv.reader(io.StringIO(generate(40, "csv")))
    nik, kk, kode, born = (
        header.index(c) for c in ("NIK", "NOMOR KK", "KODE WILAYAH", "TANGGAL LAHIR")
    )
    bad = {
        3: (nik, "1.70909E+15"),
        5: (nik, rows[5][nik][:15]),
        7: (born, "31/02/1990"),
        9: (kk, ""),
        11: (kode, "17O9"),
    }
    for index, (column, value) in bad.items():
        rows[index][column] = value
    for row in rows[::2]:
        row[nik] = "'" + row[nik]
    header = [f" {h.lower()} " for h in header]
    out = io.StringIO()
    csv.writer(out, delimiter=";", lineterminator="\r\n").writerows([header, *rows])
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode("utf-8"))
    result = simpul_cli(tmp_path / "node", "import", str(path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    rejected_lines = [r["line"] for r in summary["rejected"]]
    assert rejected_lines == [i + 2 for i in sorted(bad)]
    assert summary["persons"] == len(rows) - len(bad)
    assert all(r["reason"] for r in summary["rejected"])


def test_export_round_trips_the_shared_shape(tmp_path: Path) -> None:
    data = tmp_path / "node"
    simpul_cli(data, "import", str(write_csv(tmp_path / "h.csv", 50)))
    out = tmp_path / "out.jsonl"
    assert simpul_cli(data, "export", "--format", "jsonl", "--out", str(out)).returncode == 0
    exported = {}
    for line in out.read_text().splitlines():
        record = json.loads(line)
        record["anggota"] = [{k: v for k, v in m.items() if k != "id"} for m in record["anggota"]]
        exported[record["id"]] = record
    original = {r["id"]: r for r in map(json.loads, generate(50, "jsonl").splitlines())}
    assert exported == original
    csv_out = tmp_path / "out.csv"
    assert simpul_cli(data, "export", "--format", "csv", "--out", str(csv_out)).returncode == 0
    reimport = json.loads(simpul_cli(data, "import", str(csv_out), "--json").stdout)
    assert (reimport["unchanged"], reimport["rejected"]) == (50, [])


async def test_import_while_node_runs_is_seen_by_the_node(tmp_path: Path, node_processes) -> None:
    data = tmp_path / "node"
    token = await make_token(data)
    node = await start_node_process(data)
    node_processes.append(node)
    result = simpul_cli(data, "import", str(write_csv(tmp_path / "h.csv", 30)), "--json")
    assert result.returncode == 0, result.stderr
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            node.url + "/api/v1/records", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        assert (await response.json())["total"] == 30


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    data = tmp_path / "node"
    unknown = simpul_cli(data, "token", "create", "nobody")
    assert unknown.returncode != 0
    assert "Traceback" not in unknown.stderr
    assert "nobody" in unknown.stderr.strip().splitlines()[-1]
    weak = simpul_cli(
        data, "operator", "add", "ani", "--role", "operator", "--password-stdin", stdin="short\n"
    )
    assert weak.returncode != 0 and "Traceback" not in weak.stderr
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x00\x01 not a csv at all")
    bad_file = simpul_cli(data, "import", str(garbage))
    assert bad_file.returncode != 0 and "Traceback" not in bad_file.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "simpul.db").write_bytes(b"this is not a database" * 100)
    corrupt = simpul_cli(broken, "status")
    assert corrupt.returncode != 0 and "Traceback" not in corrupt.stderr
    assert "database" in corrupt.stderr.lower()
