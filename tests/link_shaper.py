"""A poor link of the tests' own: a TCP relay that shapes what it carries, without netem.

`LinkShaper(target_port, PoorLink(...))` listens on a loopback port and relays every
connection to `127.0.0.1:target_port` through two one-way links (one per direction), each:

- **rate**: bytes leave one after another at `rate_bits` per second (a serialising link);
- **delay**: every byte arrives `delay` seconds after it left (many in flight at once);
- **buffer**: at most `buffer_bytes` wait to leave; then the relay stops reading, so the
  sender's TCP feels the back-pressure a full modem queue gives;
- **stalls**: every `stall_every` seconds nothing leaves for `stall_seconds` (the way packet
  loss looks to an application over TCP: retransmission pauses, then a burst);
- **cuts**: at random moments (gaps drawn uniformly from 0.5-1.5 x `cut_every` seconds by
  a seeded `random.Random`) every open connection is reset, as when a mobile link drops.

The relay runs its own event loop in a thread, so a test may block (e.g. `subprocess.run`)
without pausing the link. It counts what it carried (`carried`, both directions) and the
cuts it made (`cuts`). Use it as a context manager: `with LinkShaper(port, link) as relay:`
then connect to `relay.port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

READ_BYTES = 1400  # about one TCP segment's payload on a real link
HOST = "127.0.0.1"


@dataclass(frozen=True)
class PoorLink:
    """What the link does (see the module docstring); `None` turns stalls or cuts off."""

    rate_bits: int = 256_000
    delay: float = 0.3
    buffer_bytes: int = 32 * 1024
    stall_every: float | None = None
    stall_seconds: float = 0.0
    cut_every: float | None = None
    seed: int = 17

    def __post_init__(self) -> None:
        if self.rate_bits <= 0 or self.delay < 0 or self.buffer_bytes < READ_BYTES:
            raise ValueError(f"not a usable link: {self}")
        if self.stall_every is not None and not 0 < self.stall_seconds < self.stall_every:
            raise ValueError("a stall must be shorter than the time between stalls")


class _OneWay:
    """One direction of a connection: queue -> transmitter (rate, stalls) -> in flight
    (delay) -> writer."""

    def __init__(self, shaper: LinkShaper, sink: asyncio.StreamWriter) -> None:
        self.shaper = shaper
        self.sink = sink
        self.queued = 0
        self.room = asyncio.Condition()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.in_flight: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

    async def read_from(self, source: asyncio.StreamReader) -> None:
        while True:
            data = await source.read(READ_BYTES)
            async with self.room:
                await self.room.wait_for(functools.partial(self._fits, len(data)))
                self.queued += len(data)
            await self.queue.put(data or None)
            if not data:
                return

    def _fits(self, size: int) -> bool:
        return self.queued + size <= self.shaper.link.buffer_bytes

    async def transmit(self) -> None:
        link = self.shaper.link
        free_at = time.monotonic()
        while True:
            data = await self.queue.get()
            size = len(data) if data else 0
            async with self.room:
                self.queued -= size
                self.room.notify_all()
            await self.shaper.not_stalled()
            free_at = max(free_at, time.monotonic()) + size * 8 / link.rate_bits
            await _until(free_at)
            await self.in_flight.put((free_at + link.delay, data))
            if data is None:
                return

    async def deliver(self) -> None:
        while True:
            at, data = await self.in_flight.get()
            await _until(at)
            if data is None:
                if self.sink.can_write_eof():
                    self.sink.write_eof()
                return
            self.shaper.carried += len(data)
            self.sink.write(data)
            await self.sink.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (linger 0), as a dropped link looks to the far end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _until(moment: float) -> None:
    wait = moment - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)


class LinkShaper:
    """The relay (see the module docstring)."""

    def __init__(self, target_port: int, link: PoorLink) -> None:
        self.target_port = target_port
        self.link = link
        self.port = 0
        self.carried = 0
        self.cuts = 0
        self.connections = 0
        self._random = random.Random(link.seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link-shaper")
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._started = 0.0

    def __enter__(self) -> LinkShaper:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._started = time.monotonic()
        self._server = await asyncio.start_server(self._relay, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.link.cut_every is not None:
            self._spawn(self._cutter(self.link.cut_every))

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine: object) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def not_stalled(self) -> None:
        """Return when the link is not in one of its periodic stalls."""
        every = self.link.stall_every
        if every is None:
            return
        into = (time.monotonic() - self._started) % every
        if into > every - self.link.stall_seconds:
            await asyncio.sleep(every - into)

    async def _cutter(self, mean_gap: float) -> None:
        while True:
            await asyncio.sleep(self._random.uniform(0.5, 1.5) * mean_gap)
            if self._open:
                self.cuts += 1
                log.info("link_shaper cut connections=%d", len(self._open))
                self._cut_all()

    def _cut_all(self) -> None:
        for pair in list(self._open):
            for writer in pair:
                _reset(writer)
        self._open.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            _reset(writer)
            return
        pair = (writer, up_writer)
        self._open.add(pair)
        ways = [(_OneWay(self, up_writer), reader), (_OneWay(self, writer), up_reader)]
        parts = [
            self._spawn(step)
            for way, source in ways
            for step in (way.read_from(source), way.transmit(), way.deliver())
        ]
        clean = False
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.gather(*parts)
            clean = True
        for part in parts:
            part.cancel()
        self._open.discard(pair)
        for stream in pair:
            if clean:
                stream.close()
            else:
                _reset(stream)
