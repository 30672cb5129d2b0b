"""Feeds: hash chains and signed checkpoints catch every altered, missing or reordered entry."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from simpul.crypto.node_key import NodeKey, verify_signature
from simpul.node.runtime import open_node
from simpul.sync.feed import Checkpoint, Entry, FeedError, verify_chain


async def stored_feed(data_dir: Path, households: list) -> tuple[NodeKey, list, list]:
    async with open_node(data_dir) as node:
        await node.records.import_batch([(i, h) for i, h in enumerate(households[:3])], "op")
        await node.records.import_batch([(i, h) for i, h in enumerate(households[3:5])], "op")
        entries = [
            Entry(*row)
            for row in await node.db.fetchall(
                "SELECT origin, seq, record_id, change FROM entries ORDER BY seq"
            )
        ]
        checkpoints = [
            Checkpoint(*row)
            for row in await node.db.fetchall(
                "SELECT origin, seq, chain, at_ms, signature FROM checkpoints ORDER BY seq"
            )
        ]
        return node.key, entries, checkpoints


async def test_one_checkpoint_per_transaction_and_verifies(
    tmp_path: Path, households_jsonl
) -> None:
    key, entries, checkpoints = await stored_feed(tmp_path / "n", households_jsonl)
    assert [c.seq for c in checkpoints] == [3, 5]
    assert verify_chain(entries, checkpoints, key.public_bytes, verify_signature) == 5


async def test_every_flipped_byte_is_caught(tmp_path: Path, households_jsonl) -> None:
    key, entries, checkpoints = await stored_feed(tmp_path / "n", households_jsonl)
    entry = entries[1]
    for offset in range(len(entry.change)):
        flipped = bytearray(entry.change)
        flipped[offset] ^= 0x01
        tampered = [*entries[:1], replace(entry, change=bytes(flipped)), *entries[2:]]
        with pytest.raises(FeedError):
            verify_chain(tampered, checkpoints, key.public_bytes, verify_signature)
    for offset in range(len(entry.record_id)):
        flipped = bytearray(entry.record_id)
        flipped[offset] ^= 0x80
        tampered = [*entries[:1], replace(entry, record_id=bytes(flipped)), *entries[2:]]
        with pytest.raises(FeedError, match="chain hash"):
            verify_chain(tampered, checkpoints, key.public_bytes, verify_signature)


async def test_gap_reorder_and_foreign_signature(tmp_path: Path, households_jsonl) -> None:
    key, entries, checkpoints = await stored_feed(tmp_path / "n", households_jsonl)
    with pytest.raises(FeedError, match="expected seq 2"):
        verify_chain([entries[0], *entries[2:]], checkpoints, key.public_bytes, verify_signature)
    swapped = [entries[0], entries[2], entries[1], *entries[3:]]
    with pytest.raises(FeedError, match="expected seq"):
        verify_chain(swapped, checkpoints, key.public_bytes, verify_signature)
    other = NodeKey.generate()
    with pytest.raises(FeedError, match="signature"):
        verify_chain(entries, checkpoints, other.public_bytes, verify_signature)
    with pytest.raises(FeedError, match="not covered"):
        verify_chain(entries, checkpoints[:1], key.public_bytes, verify_signature)


async def test_store_verifies_its_own_feeds(tmp_path: Path, households_jsonl) -> None:
    await stored_feed(tmp_path / "n", households_jsonl)
    async with open_node(tmp_path / "n") as node:
        assert await node.records.verify_feeds(verify_signature) == {node.node_id: 5}
