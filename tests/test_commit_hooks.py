"""A store's commit hook runs after the write has committed, and never for a rolled-back one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sync_peers import open_peers


async def test_the_commit_hook_sees_the_committed_write(tmp_path: Path, households_jsonl) -> None:
    async with open_peers(tmp_path, 1) as (a,):
        seen: list[int] = []

        def hook() -> None:  # another connection, as sync or the uplink would read
            with sqlite3.connect(a.db.path) as other:
                seen.append(other.execute("SELECT count(*) FROM records").fetchone()[0])

        a.records.on_commit = hook
        household = {k: v for k, v in households_jsonl[0].items() if k != "id"}
        created = await a.records.create(household, "ani")
        assert seen == [1]

        def refuse(current: dict) -> dict:
            raise ValueError("the edit is aborted")

        with pytest.raises(ValueError):
            await a.records.update(created["id"], refuse, "ani")
        assert seen == [1]
