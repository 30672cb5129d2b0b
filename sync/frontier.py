"""Frontiers: origin -> highest contiguous seq held, their wire form, and their difference.

What a peer lacks is `missing(mine, theirs)`: one look per origin, so a sync between two
nodes that already agree costs O(origins), never O(records).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from simpul.sync.varint import VarintError, decode_varint, encode_varint

ORIGIN_BYTES = 16
MAX_ORIGINS = 1_000_000


class FrontierError(ValueError):
    """Frontier bytes that are malformed."""


class Frontier(Mapping[bytes, int]):
    """An immutable map origin (16 bytes) -> highest contiguous seq held (>= 1)."""

    def __init__(self, seqs: Mapping[bytes, int] | None = None) -> None:
        cleaned = {}
        for origin, seq in (seqs or {}).items():
            if len(origin) != ORIGIN_BYTES:
                raise FrontierError(f"origin must be {ORIGIN_BYTES} bytes, got {len(origin)}")
            if seq < 0:
                raise FrontierError(f"origin {origin.hex()}: negative seq {seq}")
            if seq:
                cleaned[bytes(origin)] = int(seq)
        self._seqs = cleaned

    def __getitem__(self, origin: bytes) -> int:
        return self._seqs[origin]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._seqs)

    def __len__(self) -> int:
        return len(self._seqs)

    def __repr__(self) -> str:
        inner = ", ".join(f"{o.hex()}: {s}" for o, s in sorted(self._seqs.items()))
        return f"Frontier({{{inner}}})"

    def encode(self) -> bytes:
        """varint count, then per origin (sorted): 16 origin bytes + varint seq."""
        parts = [encode_varint(len(self._seqs))]
        for origin in sorted(self._seqs):
            parts += [origin, encode_varint(self._seqs[origin])]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Frontier:
        try:
            count, pos = decode_varint(data, 0)
            if count > MAX_ORIGINS:
                raise FrontierError(f"frontier lists {count} origins, more than {MAX_ORIGINS}")
            seqs: dict[bytes, int] = {}
            for _ in range(count):
                origin = bytes(data[pos : pos + ORIGIN_BYTES])
                if len(origin) != ORIGIN_BYTES:
                    raise FrontierError("frontier cut short inside an origin")
                if origin in seqs:
                    raise FrontierError(f"origin {origin.hex()} listed twice")
                seqs[origin], pos = decode_varint(data, pos + ORIGIN_BYTES)
        except VarintError as exc:
            raise FrontierError(f"frontier: {exc}") from None
        if pos != len(data):
            raise FrontierError(f"{len(data) - pos} bytes after the frontier")
        return cls(seqs)


def missing(mine: Mapping[bytes, int], theirs: Mapping[bytes, int]) -> dict[bytes, tuple[int, int]]:
    """What THEY lack of MINE: origin -> (from_seq, to_seq), both inclusive."""
    return {
        origin: (theirs.get(origin, 0) + 1, seq)
        for origin, seq in mine.items()
        if seq > theirs.get(origin, 0)
    }
