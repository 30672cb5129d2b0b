"""What this node refuses of what sync brings, as one summary it shows and tells its peers.

Two kinds (decision 0020): entries *held* (verified, stored in their feed, never applied:
`pending_entries.refusal`), counted per reason; and chunks refused for good at some seq
of an origin (`refused_chunks`: it did not verify), with a digest of the refused bytes. A
peer that is told stops offering that chunk until `RETRY_MS` has passed, but only when its
own chunk there has the same digest: a forged copy relayed by someone else never keeps
the genuine chunk away. The summary travels in a header of every LAN and
hub session (`to_header` / `from_header`), so each side can show what the other refuses.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from simpul.sync.database import Database
from simpul.sync.feed import Checkpoint, Entry

RETRY_MS = 60 * 60 * 1000  # a peer told of a refused chunk offers it again after an hour
MAX_CHUNKS = 64  # origins listed in a header (the rest are left out)
MAX_HEADER = 8 * 1024
FOR_GOOD = ("untrusted", "chain", "own-feed")  # chunk refusals worth remembering


class RefusalHeaderError(ValueError):
    """A peer's refusal header that cannot be read."""


def reason_of(refusal: str) -> str:
    """The reason key of a stored refusal text ('scope: record in region …' -> 'scope')."""
    return refusal.split(":", 1)[0]


@dataclass
class RefusalSummary:
    """Entries held per reason, and the chunks refused for good per origin."""

    held: dict[str, int] = field(default_factory=dict)
    # origin -> (first refused seq, reason, digest of the refused chunk)
    chunks: dict[bytes, tuple[int, str, bytes]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.held or self.chunks)

    def counts(self) -> dict[str, int]:
        """Per reason: entries held, plus one for each origin whose chunk is refused."""
        counts = dict(self.held)
        for _, reason, _ in self.chunks.values():
            counts[reason] = counts.get(reason, 0) + 1
        return counts

    def refused_at(self, theirs: Mapping[bytes, int]) -> dict[bytes, tuple[int, bytes]]:
        """Per origin, the seq where the node that sent this summary (whose frontier is
        `theirs`) refused exactly the chunk we would start with, and that chunk's digest:
        skip the origin when ours has the same digest."""
        return {
            o: (seq, digest)
            for o, (seq, _, digest) in self.chunks.items()
            if seq == theirs.get(o, 0) + 1
        }

    def to_json(self) -> dict:
        return {
            "held": dict(sorted(self.held.items())),
            "chunks": {
                o.hex(): [seq, r, d.hex()] for o, (seq, r, d) in sorted(self.chunks.items())
            },
        }

    def to_header(self) -> str:
        chunks = dict(sorted(self.chunks.items())[:MAX_CHUNKS])
        return json.dumps(RefusalSummary(self.held, chunks).to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: object) -> RefusalSummary:
        """A summary from its JSON form; RefusalHeaderError when malformed."""
        try:
            assert isinstance(data, dict)
            held = {str(k): int(v) for k, v in data.get("held", {}).items()}
            chunks = {
                bytes.fromhex(o): (int(seq), str(reason), bytes.fromhex(digest))
                for o, (seq, reason, digest) in data.get("chunks", {}).items()
            }
        except (AssertionError, AttributeError, TypeError, ValueError) as exc:
            raise RefusalHeaderError(f"malformed refusal summary: {exc}") from exc
        return cls(held, chunks)

    @classmethod
    def from_header(cls, value: str) -> RefusalSummary:
        if len(value) > MAX_HEADER:
            raise RefusalHeaderError("refusal summary too long")
        try:
            return cls.from_json(json.loads(value))
        except json.JSONDecodeError as exc:
            raise RefusalHeaderError(f"malformed refusal summary: {exc}") from exc


async def refusal_summary(db: Database, now_ms: int | None = None) -> RefusalSummary:
    """This node's refusals: every held entry, and chunks refused within `RETRY_MS`."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    held: dict[str, int] = {}
    for refusal, count in await db.fetchall(
        "SELECT refusal, count(*) FROM pending_entries WHERE refusal IS NOT NULL GROUP BY refusal"
    ):
        held[reason_of(refusal)] = held.get(reason_of(refusal), 0) + count
    rows = await db.fetchall(
        "SELECT origin, seq, reason, digest FROM refused_chunks WHERE at_ms > ?",
        (now - RETRY_MS,),
    )
    return RefusalSummary(held, {bytes(o): (seq, r, bytes(d)) for o, seq, r, d in rows})


def chunk_digest(entries: list[Entry], checkpoint: Checkpoint) -> bytes:
    """What identifies a chunk's bytes: its entries' changes and its closing checkpoint."""
    digest = hashlib.sha256(b"simpul-refused-chunk-v1")
    for entry in entries:
        digest.update(entry.seq.to_bytes(8, "big") + entry.record_id + entry.change)
    digest.update(checkpoint.chain + checkpoint.signature)
    return digest.digest()


async def refused_per_origin(db: Database) -> dict[str, dict[str, int]]:
    """Per origin (hex): what this node refuses of its feed, per reason (held entries, and
    1 for a chunk refused for good)."""
    found: dict[str, dict[str, int]] = {}
    for origin, refusal, count in await db.fetchall(
        "SELECT origin, refusal, count(*) FROM pending_entries WHERE refusal IS NOT NULL"
        " GROUP BY origin, refusal"
    ):
        reasons = found.setdefault(bytes(origin).hex(), {})
        reasons[reason_of(refusal)] = reasons.get(reason_of(refusal), 0) + count
    for origin, reason in await db.fetchall("SELECT origin, reason FROM refused_chunks"):
        reasons = found.setdefault(bytes(origin).hex(), {})
        reasons[reason] = reasons.get(reason, 0) + 1
    return found
