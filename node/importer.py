"""CSV import into a node's store: stream the file, commit households in batches, report.

Each batch is one transaction with one signed checkpoint, so a crash mid-import keeps
every committed batch and nothing half-written; re-running the import finishes the job
without duplicates (households match by id, else by KK number).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from simpul.sync.csv_households import Rejection, count_data_lines, read_households_csv
from simpul.sync.store import ImportOutcome, RecordStore

log = logging.getLogger(__name__)

BATCH_HOUSEHOLDS = 1000


async def import_csv(
    records: RecordStore, path: Path, operator: str, show_progress: bool = False
) -> dict[str, Any]:
    """Import `path`; returns {households, persons, created, updated, unchanged, rejected}."""
    total = ImportOutcome()
    rejected: list[dict[str, Any]] = []
    batch: list[tuple[int, Mapping[str, Any]]] = []
    stderr = click.get_text_stream("stderr")
    bar = (
        click.progressbar(length=count_data_lines(path), label="Import", file=stderr)
        if show_progress
        else nullcontext()
    )
    done_line = 1

    async def flush() -> None:
        outcome = await records.import_batch(batch, operator)
        total.created += outcome.created
        total.updated += outcome.updated
        total.unchanged += outcome.unchanged
        total.persons += outcome.persons
        rejected.extend({"line": line, "reason": reason} for line, reason in outcome.rejected)
        log.info(
            "import batch file=%s households=%d created=%d updated=%d",
            path,
            len(batch),
            outcome.created,
            outcome.updated,
        )
        batch.clear()

    with bar as progress:
        for item in read_households_csv(path):
            if isinstance(item, Rejection):
                rejected.append({"line": item.line, "reason": item.reason})
                continue
            batch.append((item.line, item.household))
            if progress is not None:
                progress.update(item.line - done_line)
                done_line = item.line
            if len(batch) >= BATCH_HOUSEHOLDS:
                await flush()
        if batch:
            await flush()
    rejected.sort(key=lambda r: r["line"])
    households = total.created + total.updated + total.unchanged
    return {
        "households": households,
        "persons": total.persons,
        "created": total.created,
        "updated": total.updated,
        "unchanged": total.unchanged,
        "rejected": rejected,
    }
