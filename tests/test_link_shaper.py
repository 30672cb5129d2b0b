"""The tests' own poor link (tests/link_shaper.py) does what it claims: rate, delay,
stalls, cuts, measured through real loopback sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from link_shaper import LinkShaper, PoorLink

PAYLOAD = 16 * 1024
RATE = 256_000  # bits per second: 32,000 bytes a second


async def _sink_server() -> tuple[asyncio.Server, asyncio.Queue[tuple[float, int]]]:
    """A server that notes when each piece arrives and how big it is."""
    arrivals: asyncio.Queue[tuple[float, int]] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            arrivals.put_nowait((time.monotonic(), len(data)))
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0), arrivals


@pytest.fixture
async def sink() -> AsyncIterator[tuple[int, asyncio.Queue[tuple[float, int]]]]:
    server, arrivals = await _sink_server()
    async with server:
        yield server.sockets[0].getsockname()[1], arrivals


async def _send_and_time(
    relay: LinkShaper, arrivals: asyncio.Queue[tuple[float, int]], size: int
) -> tuple[float, float]:
    """(seconds to the first byte, seconds to the last) for `size` bytes sent at once."""
    _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    start = time.monotonic()
    writer.write(b"x" * size)
    await writer.drain()
    got, first = 0, None
    async with asyncio.timeout(30):
        while got < size:
            at, n = await arrivals.get()
            first = first if first is not None else at
            got += n
    writer.close()
    assert first is not None
    return first - start, at - start


async def test_rate_and_delay_shape_what_arrives(
    sink: tuple[int, asyncio.Queue[tuple[float, int]]],
) -> None:
    port, arrivals = sink
    with LinkShaper(port, PoorLink(rate_bits=RATE, delay=0.3)) as relay:
        first, last = await _send_and_time(relay, arrivals, PAYLOAD)
        assert relay.carried == PAYLOAD
    ideal = PAYLOAD * 8 / RATE + 0.3
    assert first >= 0.3
    assert ideal * 0.95 <= last <= ideal + 1.0, (first, last, ideal)


async def test_stalls_pause_the_link(sink: tuple[int, asyncio.Queue[tuple[float, int]]]) -> None:
    port, arrivals = sink
    link = PoorLink(rate_bits=RATE, delay=0.0, stall_every=0.4, stall_seconds=0.2)
    with LinkShaper(port, link) as relay:
        _, last = await _send_and_time(relay, arrivals, 2 * PAYLOAD)
    unstalled = 2 * PAYLOAD * 8 / RATE
    assert last >= unstalled * 1.6, (last, unstalled)  # half of every 0.4 s is a stall


async def test_cuts_reset_open_connections_and_new_ones_still_connect(
    sink: tuple[int, asyncio.Queue[tuple[float, int]]],
) -> None:
    port, arrivals = sink
    with LinkShaper(port, PoorLink(rate_bits=RATE, delay=0.05, cut_every=0.3)) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"x")
        async with asyncio.timeout(20):
            with pytest.raises(ConnectionResetError):
                await reader.read(1)  # the relay aborts: a reset, not an EOF
        assert relay.cuts >= 1
        _, last = await _send_and_time(relay, arrivals, 100)  # the link is still there
        assert last < 5
