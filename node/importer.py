"""CSV and .xlsx import into a node's store: parse in a child process, commit in batches.

Parsing and validating the file runs in a separate process so it overlaps with building
Automerge documents and writing SQLite in this one (two cores, twice the work). Each
batch is one transaction with one signed checkpoint, so a crash mid-import keeps every
committed batch and nothing half-written; re-running the import finishes the job without
duplicates (households match by id, else by KK number).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, nullcontext
from pathlib import Path
from typing import Any

import click

from simpul.node.parse_worker import HEADER
from simpul.sync import regions
from simpul.sync.csv_households import (
    CsvFormatError,
    CsvHousehold,
    Rejection,
    count_data_lines,
)
from simpul.sync.store import ImportOutcome, RecordStore

log = logging.getLogger(__name__)

BATCH_HOUSEHOLDS = 1000

Parsed = list[CsvHousehold | Rejection]


async def parsed_batches(path: Path) -> AsyncIterator[Parsed]:
    """Batches of parsed CSV items, produced by a child process (see parse_worker)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simpul.node.parse_worker",
        str(path),
        str(BATCH_HOUSEHOLDS),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        while True:
            try:
                size = HEADER.unpack(await child.stdout.readexactly(HEADER.size))[0]
                item = pickle.loads(await child.stdout.readexactly(size))
            except asyncio.IncompleteReadError:
                code = await child.wait()
                raise CsvFormatError(f"reading {path} stopped unexpectedly (exit {code})") from None
            if item is None:
                return
            if isinstance(item, CsvFormatError):
                raise item
            yield item
    finally:
        if child.returncode is None:
            child.kill()
        await child.communicate()  # to the pipe's end too, so it closes before the loop does


async def import_csv(
    records: RecordStore,
    path: Path,
    operator: str,
    show_progress: bool = False,
    refuse_duplicates: bool = True,
) -> dict[str, Any]:
    """Import `path` (CSV or .xlsx); returns {households, persons, created, updated,
    unchanged, rejected}. Rows whose NIK or KK another household holds are refused unless
    `refuse_duplicates` is False (they are then listed as duplicates)."""
    total = ImportOutcome()
    rejected: list[dict[str, Any]] = []
    total_lines = count_data_lines(path) if show_progress else 0
    bar = (
        click.progressbar(length=total_lines, label="Import", file=sys.stderr)
        if show_progress
        else nullcontext()
    )
    with bar as progress:
        done_line = 1
        # aclosing: an error mid-import (a wrong clock, a full disk) stops the parser now
        async with aclosing(parsed_batches(path)) as batches:
            async for items in batches:
                batch: list[tuple[int, Mapping[str, Any]]] = []
                names: dict[str, tuple[str, ...]] = {}
                member_lines: dict[int, list[int]] = {}
                for item in items:
                    if isinstance(item, Rejection):
                        rejected.append({"line": item.line, "reason": item.reason})
                    else:
                        batch.append((item.line, item.household))
                        member_lines[item.line] = item.member_lines
                        if item.region_names:
                            names[item.household["kode_wilayah"]] = item.region_names
                outcome = await records.import_batch(
                    batch, operator, refuse_duplicates=refuse_duplicates, member_lines=member_lines
                )
                await regions.remember(records.db, names)
                total.created += outcome.created
                total.updated += outcome.updated
                total.unchanged += outcome.unchanged
                total.persons += outcome.persons
                rejected.extend(
                    {"line": line, "reason": reason} for line, reason in outcome.rejected
                )
                log.info(
                    "import batch file=%s households=%d created=%d updated=%d",
                    path,
                    len(batch),
                    outcome.created,
                    outcome.updated,
                )
                if progress is not None and batch:
                    progress.update(batch[-1][0] - done_line)
                    done_line = batch[-1][0]
        if progress is not None:  # the last household's rows and any trailing rejected rows
            progress.update(max(total_lines + 1 - done_line, 0))
    rejected.sort(key=lambda r: r["line"])
    return {
        "households": total.created + total.updated + total.unchanged,
        "persons": total.persons,
        "created": total.created,
        "updated": total.updated,
        "unchanged": total.unchanged,
        "rejected": rejected,
    }
