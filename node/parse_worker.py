"""Child process of `simpul import`: parse and validate a CSV or .xlsx file, stream the results.

Run as `python -m simpul.node.parse_worker FILE BATCH`. Writes length-prefixed pickles to
stdout: lists of parsed items (CsvHousehold / Rejection) of about BATCH households each,
then None; or a CsvFormatError. When the importing process dies, the next write fails
with a broken pipe and this process ends with it.
"""

from __future__ import annotations

import pickle
import struct
import sys
from pathlib import Path
from typing import BinaryIO

from simpul.sync.csv_households import CsvFormatError, CsvHousehold, read_households_file

HEADER = struct.Struct(">Q")


def send(out: BinaryIO, item: object) -> None:
    data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(HEADER.pack(len(data)) + data)
    out.flush()


def main(path: Path, batch_households: int, out: BinaryIO) -> None:
    try:
        batch: list[object] = []
        households = 0
        for item in read_households_file(path):
            batch.append(item)
            households += isinstance(item, CsvHousehold)
            if households >= batch_households:
                send(out, batch)
                batch, households = [], 0
        send(out, batch)
        send(out, None)
    except CsvFormatError as exc:
        send(out, exc)


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]), int(sys.argv[2]), sys.stdout.buffer)
    except BrokenPipeError:
        sys.exit(1)
