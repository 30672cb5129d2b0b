"""Feeds: per-origin hash chains over Automerge change hashes, and signed checkpoints.

An entry is `(origin, seq, record_id, change)` where `change` is the raw Automerge change
chunk. Its link in the chain is

    chain[seq] = SHA-256("simpul-feed-v1" || chain[seq-1] || seq:u64be || record_id || hash)

with chain[0] = 32 zero bytes and `hash` the Automerge change hash, which is SHA-256 of
the raw chunk after its 4-byte magic and 4-byte checksum (so it is the same however the
change travels). A checkpoint `(origin, seq, chain, at_ms)` is signed once per local
transaction by the origin's Ed25519 key: verifying N entries costs N hashes and one
signature check per checkpoint, not N signature checks.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

GENESIS = bytes(32)
CHAIN_DOMAIN = b"simpul-feed-v1"
CHECKPOINT_DOMAIN = b"simpul-checkpoint-v1\x00"
AUTOMERGE_MAGIC = bytes.fromhex("856f4a83")
RECORD_ID_BYTES = 16


class FeedError(Exception):
    """A feed that does not verify; `reason` says exactly where and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def change_hash(raw_change: bytes) -> bytes:
    """The Automerge hash of a raw (uncompressed) change chunk."""
    if len(raw_change) < 10 or raw_change[:4] != AUTOMERGE_MAGIC:
        raise FeedError("not a raw Automerge change chunk")
    digest = hashlib.sha256(raw_change[8:]).digest()
    if digest[:4] != raw_change[4:8]:
        raise FeedError("Automerge change checksum does not match its contents")
    return digest


def chain_link(previous: bytes, seq: int, record_id: bytes, hash_: bytes) -> bytes:
    return hashlib.sha256(
        CHAIN_DOMAIN + previous + struct.pack(">Q", seq) + record_id + hash_
    ).digest()


@dataclass(frozen=True)
class Entry:
    """One feed entry as stored and carried."""

    origin: bytes
    seq: int
    record_id: bytes
    change: bytes


@dataclass(frozen=True)
class Checkpoint:
    """An origin's signed statement: my feed up to `seq` has chain hash `chain`."""

    origin: bytes
    seq: int
    chain: bytes
    at_ms: int
    signature: bytes

    @staticmethod
    def message(origin: bytes, seq: int, chain: bytes, at_ms: int) -> bytes:
        return CHECKPOINT_DOMAIN + origin + struct.pack(">QQ", seq, at_ms) + chain

    @classmethod
    def sign(
        cls, origin: bytes, seq: int, chain: bytes, at_ms: int, signer: Callable[[bytes], bytes]
    ) -> Checkpoint:
        return cls(origin, seq, chain, at_ms, signer(cls.message(origin, seq, chain, at_ms)))

    def verify(self, public_key: bytes, verifier: Callable[[bytes, bytes, bytes], bool]) -> bool:
        message = self.message(self.origin, self.seq, self.chain, self.at_ms)
        return verifier(public_key, message, self.signature)


def verify_chain(
    entries: Iterable[Entry],
    checkpoints: Iterable[Checkpoint],
    public_key: bytes,
    verifier: Callable[[bytes, bytes, bytes], bool],
    start_seq: int = 1,
    start_chain: bytes = GENESIS,
) -> int:
    """Verify one origin's entries (in seq order) against its checkpoints.

    Every entry must be covered by a later-or-equal checkpoint whose chain matches and
    whose signature verifies. Returns the highest verified seq; raises FeedError naming
    the first problem (gap, reordering, bad hash, chain mismatch, bad signature,
    entries past the last checkpoint).
    """
    by_seq = {c.seq: c for c in checkpoints}
    chain = start_chain
    expected = start_seq
    verified = start_seq - 1
    for entry in entries:
        if entry.seq != expected:
            raise FeedError(
                f"origin {entry.origin.hex()}: expected seq {expected}, got {entry.seq}"
            )
        if len(entry.record_id) != RECORD_ID_BYTES:
            raise FeedError(f"origin {entry.origin.hex()} seq {entry.seq}: malformed record id")
        try:
            hash_ = change_hash(entry.change)
        except FeedError as exc:
            raise FeedError(f"origin {entry.origin.hex()} seq {entry.seq}: {exc.reason}") from None
        chain = chain_link(chain, entry.seq, entry.record_id, hash_)
        checkpoint = by_seq.get(entry.seq)
        if checkpoint is not None:
            if checkpoint.chain != chain:
                raise FeedError(
                    f"origin {entry.origin.hex()} seq {entry.seq}: chain hash does not match "
                    "the checkpoint (an entry was altered, dropped or reordered)"
                )
            if not checkpoint.verify(public_key, verifier):
                raise FeedError(
                    f"origin {entry.origin.hex()} seq {entry.seq}: checkpoint signature invalid"
                )
            verified = entry.seq
        expected += 1
    if verified != expected - 1:
        raise FeedError(f"entries after seq {verified} are not covered by a signed checkpoint")
    return verified
