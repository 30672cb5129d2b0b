"""Child process of `simpul import`: parse and validate a CSV or .xlsx file, stream the results.

Run as `python -m simpul.node.parse_worker FILE BATCH`. Writes length-prefixed pickles to
stdout: lists of parsed items (CsvHousehold / Rejection) of about BATCH households each,
then None; or a CsvFormatError. When the importing process dies, the next write fails
with a broken pipe and this process ends with it.

A workbook's sheet is parsed by openpyxl in a process of its own (`--sheet FILE`: the
column names, then lists of rows, then None), because that parse costs more than
everything else of the import together: with it apart, grouping and validating here and
writing the store in the importer run beside it, on the other core.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from simpul.sync.csv_households import (
    CsvFormatError,
    CsvHousehold,
    Rejection,
    SourceRow,
    households_from_rows,
    is_workbook,
    read_households_csv,
)

HEADER = struct.Struct(">Q")
SHEET_ROWS_BATCH = 2000


def send(out: BinaryIO, item: object) -> None:
    data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(HEADER.pack(len(data)) + data)
    out.flush()


def receive(source: BinaryIO) -> Any:
    """The next item `send` wrote; EOFError if the writer ended without one."""
    head = source.read(HEADER.size)
    if len(head) < HEADER.size:
        raise EOFError
    (size,) = HEADER.unpack(head)
    data = source.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def main(path: Path, batch_households: int, out: BinaryIO) -> None:
    try:
        batch: list[object] = []
        households = 0
        items = _workbook_items(path) if is_workbook(path) else read_households_csv(path)
        for item in items:
            batch.append(item)
            households += isinstance(item, CsvHousehold)
            if households >= batch_households:
                send(out, batch)
                batch, households = [], 0
        send(out, batch)
        send(out, None)
    except CsvFormatError as exc:
        send(out, exc)


def _workbook_items(path: Path) -> Iterator[CsvHousehold | Rejection]:
    sheet = subprocess.Popen(
        [sys.executable, "-m", "simpul.node.parse_worker", "--sheet", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert sheet.stdout is not None
    try:
        first = _received(sheet, path)
        if isinstance(first, CsvFormatError):
            raise first
        yield from households_from_rows(_sheet_rows(sheet, path), first)
    finally:
        if sheet.poll() is None:
            sheet.kill()
        sheet.stdout.close()
        sheet.wait()


def _received(sheet: subprocess.Popen[bytes], path: Path) -> Any:
    assert sheet.stdout is not None
    try:
        return receive(sheet.stdout)
    except EOFError:
        code = sheet.wait()
        raise CsvFormatError(f"reading {path} stopped unexpectedly (exit {code})") from None


def _sheet_rows(sheet: subprocess.Popen[bytes], path: Path) -> Iterator[SourceRow]:
    while (rows := _received(sheet, path)) is not None:
        yield from rows


def sheet_main(path: Path, out: BinaryIO) -> None:
    """The `--sheet` process: openpyxl's parse of the workbook, rows in batches."""
    from simpul.sync.xlsx_households import sheet_rows  # openpyxl only here

    try:
        columns, rows = sheet_rows(path)
    except CsvFormatError as exc:
        send(out, exc)
        return
    send(out, columns)
    batch: list[SourceRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= SHEET_ROWS_BATCH:
            send(out, batch)
            batch = []
    send(out, batch)
    send(out, None)


if __name__ == "__main__":
    try:
        if sys.argv[1] == "--sheet":
            sheet_main(Path(sys.argv[2]), sys.stdout.buffer)
        else:
            main(Path(sys.argv[1]), int(sys.argv[2]), sys.stdout.buffer)
    except BrokenPipeError:
        sys.exit(1)
