"""Bundle codec and frontiers: round trips, and every kind of bad input gets a clear error."""

from __future__ import annotations

import os
import struct
import zlib

import pytest
import zstandard

from simpul.sync.bundle import (
    CHECKPOINT,
    CHUNK_MAX_ENTRIES,
    ENTRIES,
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    MAX_FRAME_BYTES,
    BundleDecoder,
    BundleError,
    Certificate,
    End,
    Entries,
    FeedChunker,
    Hello,
    decode_bundle,
    encode_frame,
)
from simpul.sync.feed import Checkpoint, Entry
from simpul.sync.frontier import Frontier, FrontierError, missing
from simpul.sync.varint import decode_varint, encode_varint

A, B, C = (bytes([n]) * 16 for n in (1, 2, 3))


def sample_frames() -> list:
    checkpoint = Checkpoint(A, 2, bytes(range(32)), 1_700_000_000_000, bytes(64))
    return [
        Hello(FORMAT_VERSION, A, b"network"),
        Certificate(A, bytes(32), b"-----BEGIN CERTIFICATE-----\n"),
        Entries(A, 1, ((bytes(16), b"change one"), (b"\x07" * 16, b"change two" * 30))),
        checkpoint,
        Frontier({A: 2, B: 300}),
        End(),
    ]


def sample_bundle() -> bytes:
    return HEADER + b"".join(encode_frame(f) for f in sample_frames())


def test_varint_round_trip() -> None:
    for value in (0, 1, 127, 128, 300, 2**32, 2**63):
        assert decode_varint(encode_varint(value), 0) == (value, len(encode_varint(value)))


def test_frontier_round_trip_and_missing() -> None:
    frontier = Frontier({A: 5, B: 1, C: 0})
    assert Frontier.decode(frontier.encode()) == frontier == {A: 5, B: 1}
    assert missing({A: 5, B: 1}, {A: 3, C: 9}) == {A: (4, 5), B: (1, 1)}
    assert missing({A: 5}, {A: 5}) == {}
    for bad in (b"", b"\x01" + A, b"\x02" + A + b"\x01" + A + b"\x01", frontier.encode() + b"x"):
        with pytest.raises(FrontierError):
            Frontier.decode(bad)


def test_round_trip_in_any_slicing() -> None:
    data = sample_bundle()
    assert decode_bundle(data) == sample_frames()
    decoder = BundleDecoder()
    frames = [frame for byte in data for frame in decoder.feed(bytes([byte]))]
    decoder.close()
    assert frames == sample_frames()


def test_truncation_at_every_byte_yields_valid_prefix_and_error() -> None:
    data = sample_bundle()
    boundaries = [len(HEADER)]
    for frame in sample_frames():
        boundaries.append(boundaries[-1] + len(encode_frame(frame)))
    for cut in range(len(data)):
        decoder = BundleDecoder()
        frames = decoder.feed(data[:cut])
        whole = sum(1 for b in boundaries[1:] if b <= cut)
        assert frames == sample_frames()[:whole], cut
        with pytest.raises(BundleError, match="cut short") as info:
            decoder.close()
        assert info.value.offset == max([0, *(b for b in boundaries if b <= cut)])


def test_every_flipped_byte_is_detected() -> None:
    data = sample_bundle()
    for offset in range(len(data)):
        flipped = bytearray(data)
        flipped[offset] ^= 0x10
        decoder = BundleDecoder()
        with pytest.raises(BundleError):
            decoder.feed(bytes(flipped))
            decoder.close()


def test_error_carries_the_frames_before_it() -> None:
    frames = sample_frames()
    good = HEADER + encode_frame(frames[0]) + encode_frame(frames[1])
    bad = bytearray(encode_frame(frames[2]))
    bad[-1] ^= 0xFF
    with pytest.raises(BundleError, match="checksum") as info:
        BundleDecoder().feed(good + bytes(bad))
    assert info.value.frames == frames[:2]
    assert info.value.offset == len(good)


def frame_bytes(kind: int, payload: bytes) -> bytes:
    body = bytes([kind]) + encode_varint(len(payload)) + payload
    return body + struct.pack(">I", zlib.crc32(body))


def test_oversized_frames_are_refused() -> None:
    with pytest.raises(BundleError, match="exceeds"):
        BundleDecoder().feed(HEADER + bytes([ENTRIES]) + encode_varint(MAX_FRAME_BYTES + 1))
    # an entries frame announcing more than the limit uncompressed (a zstd bomb)
    payload = A + encode_varint(1) + encode_varint(1) + encode_varint(MAX_FRAME_BYTES + 1)
    with pytest.raises(BundleError, match="uncompressed"):
        BundleDecoder().feed(HEADER + frame_bytes(ENTRIES, payload + b"\x00" * 16))


def test_entries_frames_of_too_many_or_impossible_entries_are_refused() -> None:
    """A few bytes of zstd can announce a flood of empty changes: refused before decoding."""
    flood = ((bytes(16), b""),) * (CHUNK_MAX_ENTRIES + 1)
    with pytest.raises(BundleError, match="exceeds the 1000 limit"):
        BundleDecoder().feed(HEADER + encode_frame(Entries(A, 1, flood)))
    at_limit = Entries(A, 1, flood[:CHUNK_MAX_ENTRIES])
    assert BundleDecoder().feed(HEADER + encode_frame(at_limit)) == [at_limit]
    raw = bytes(16) + encode_varint(0)  # room for one entry, while ten are announced
    payload = A + encode_varint(1) + encode_varint(10) + encode_varint(len(raw))
    packed = zstandard.ZstdCompressor().compress(raw)
    with pytest.raises(BundleError, match="cannot fit"):
        BundleDecoder().feed(HEADER + frame_bytes(ENTRIES, payload + packed))


def test_frames_one_at_a_time_match_feed_in_any_slicing() -> None:
    data = sample_bundle()
    for size in (1, 7, 64, len(data)):
        decoder = BundleDecoder()
        frames = [
            f for at in range(0, len(data), size) for f in decoder.frames(data[at : at + size])
        ]
        decoder.close()
        assert frames == sample_frames(), size
    # a stream damaged in its second frame: the first comes out, then the error
    bad = bytearray(data)
    bad[len(HEADER) + len(encode_frame(sample_frames()[0])) + 3] ^= 0xFF
    decoder = BundleDecoder()
    got = []
    with pytest.raises(BundleError, match="checksum"):
        got.extend(decoder.frames(bytes(bad)))
    assert got == sample_frames()[:1]


def test_decompressed_size_must_match_announcement() -> None:
    raw = bytes(16) + encode_varint(5000) + b"x" * 5000
    packed = zstandard.ZstdCompressor().compress(raw)
    for announced in (100, len(raw) + 1):
        payload = A + encode_varint(1) + encode_varint(1) + encode_varint(announced) + packed
        with pytest.raises(BundleError, match="different size"):
            BundleDecoder().feed(HEADER + frame_bytes(ENTRIES, payload))


def test_unknown_version_type_and_magic_are_refused() -> None:
    with pytest.raises(BundleError, match="version 2") as info:
        BundleDecoder().feed(MAGIC + bytes([FORMAT_VERSION + 1]))
    assert info.value.offset == len(MAGIC)
    with pytest.raises(BundleError, match="magic"):
        BundleDecoder().feed(b"PK\x03\x04")
    with pytest.raises(BundleError, match="unknown frame type 99"):
        BundleDecoder().feed(HEADER + frame_bytes(99, b""))
    with pytest.raises(BundleError, match="unexpected bytes"):
        BundleDecoder().feed(HEADER + frame_bytes(CHECKPOINT, encode_frame(End()) * 60))


def test_data_after_end_and_a_failed_decoder_stays_failed() -> None:
    decoder = BundleDecoder()
    with pytest.raises(BundleError, match="after the end"):
        decoder.feed(sample_bundle() + encode_frame(End()))
    with pytest.raises(BundleError, match="after the end"):
        decoder.feed(b"")


def test_random_garbage_never_crashes() -> None:
    for size in range(0, 400, 7):
        decoder = BundleDecoder()
        with pytest.raises(BundleError):
            decoder.feed(HEADER + os.urandom(size))
            decoder.close()


def entries(origin: bytes, count: int, size: int = 10) -> list[Entry]:
    return [Entry(origin, seq, bytes(16), bytes([seq % 256]) * size) for seq in range(1, count + 1)]


def chunk(chunker: FeedChunker, feed: list[Entry], checkpoint_seqs: set[int]) -> list:
    return [
        frame
        for e in feed
        for frame in chunker.add(
            e, Checkpoint(A, e.seq, bytes(32), 0, bytes(64)) if e.seq in checkpoint_seqs else None
        )
    ]


def test_chunker_closes_each_run_with_its_checkpoint() -> None:
    frames = chunk(FeedChunker(max_entries=2), entries(A, 7), {3, 7})
    shape = [
        (f.first_seq, len(f.items)) if isinstance(f, Entries) else ("cp", f.seq) for f in frames
    ]
    assert shape == [(1, 2), (3, 1), ("cp", 3), (4, 2), (6, 2), ("cp", 7)]


def test_chunker_bounds_bytes() -> None:
    frames = chunk(FeedChunker(max_bytes=250), entries(A, 5, size=100), {5})
    assert [len(f.items) for f in frames if isinstance(f, Entries)] == [3, 2]
