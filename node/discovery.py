"""Finding other nodes on the LAN: DNS-SD service `_simpul._tcp.local.` over mDNS (zeroconf).

Each node announces one service, named by its node id, on its sync port, whose TXT record
holds exactly three keys and nothing personal or secret:

| key | value |
| --- | --- |
| `v` | protocol version, `1` |
| `net` | network id (hex), empty for a node that has not joined a network |
| `node` | node id (hex) |

It browses for the same service type; every announcement it hears from another node is
written to the peers table: `discovered` for a node of our network (and handed to the
`on_peer` hook, where the sync scheduler plugs in), `foreign` for any other, whose presence
is logged once. Announcements that are malformed or of another protocol version are
ignored (logged once per name).

Interfaces come and go (WiFi reconnects, cables, DHCP): every `poll_seconds` the node
lists its IPv4 addresses on interfaces that are up (ifaddr, and /sys/class/net operstate
where it exists), and with its network id; when that changes, the Zeroconf instance is
closed and made anew on the current interfaces, which re-announces this node and
re-queries the LAN. With no usable interface it waits idle. IPv4 only: office LANs are.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ifaddr
from zeroconf import (
    DNSRecord,
    IPVersion,
    NonUniqueNameException,
    RecordUpdate,
    RecordUpdateListener,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from simpul.node.peers import Peer, PeerTable

log = logging.getLogger(__name__)

SERVICE_TYPE = "_simpul._tcp.local."
PROTOCOL_VERSION = "1"
TXT_KEYS = frozenset({"v", "net", "node"})
POLL_SECONDS = 5.0
RESOLVE_TIMEOUT_MS = 3000
HEARD_MIN_INTERVAL = 1.0  # seconds between two peers-table writes for one announcer
MAX_TRACKED = 4096  # names remembered for throttling and log-once; a flood starts afresh
NODE_ID_HEX = 32
NETWORK_ID_HEX = 64
UP_STATES = ("up", "unknown")  # operstate "unknown": drivers that report no carrier state


class InvalidAnnouncement(ValueError):
    """A service of our type whose TXT record or port is not a Simpul announcement."""


@dataclass(frozen=True)
class Announcement:
    """What one node says about itself on the LAN."""

    node_id: str
    network_id: str
    host: str
    port: int


def txt_properties(node_id: str, network_id: str) -> dict[str, str]:
    """The TXT record this node announces: version, network id, node id, nothing else."""
    return {"v": PROTOCOL_VERSION, "net": network_id, "node": node_id}


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and all(c in "0123456789abcdef" for c in value)


def parse_announcement(
    info: AsyncServiceInfo, local_networks: list[ipaddress.IPv4Network]
) -> Announcement:
    """The announcement in a resolved service; InvalidAnnouncement says what is wrong."""
    txt = {
        key.decode(errors="replace"): (value or b"").decode(errors="replace")
        for key, value in info.properties.items()
    }
    if txt.get("v") != PROTOCOL_VERSION:
        raise InvalidAnnouncement(f"protocol version {txt.get('v')!r}")
    node_id, network_id = txt.get("node", ""), txt.get("net", "")
    if not _is_hex(node_id, NODE_ID_HEX):
        raise InvalidAnnouncement("node id is not 32 hex digits")
    if network_id and not _is_hex(network_id, NETWORK_ID_HEX):
        raise InvalidAnnouncement("network id is not 64 hex digits")
    if not info.port or not 0 < info.port < 65536:
        raise InvalidAnnouncement(f"port {info.port}")
    addresses = info.parsed_addresses(IPVersion.V4Only)
    if not addresses:
        raise InvalidAnnouncement("no IPv4 address")
    on_link = [a for a in addresses if any(ipaddress.ip_address(a) in n for n in local_networks)]
    return Announcement(node_id, network_id, (on_link or addresses)[0], info.port)


@dataclass(frozen=True)
class LocalAddress:
    """An IPv4 address of this machine on an interface that is up."""

    address: str
    network: ipaddress.IPv4Network


def _interface_up(name: str) -> bool:
    operstate = Path("/sys/class/net") / name / "operstate"
    try:
        return operstate.read_text().strip() in UP_STATES
    except OSError:
        return True  # no sysfs (not Linux): trust the address list


def local_addresses() -> list[LocalAddress]:
    """Non-loopback IPv4 addresses on interfaces that are up, sorted."""
    found = []
    for adapter in ifaddr.get_adapters():
        if not _interface_up(adapter.name):
            continue
        for ip in adapter.ips:
            if not ip.is_IPv4 or ipaddress.ip_address(ip.ip).is_loopback:
                continue
            network = ipaddress.ip_network(f"{ip.ip}/{ip.network_prefix}", strict=False)
            found.append(LocalAddress(str(ip.ip), network))
    return sorted(found, key=lambda a: a.address)


GONE_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL, errno.EHOSTUNREACH}
)


class InterfaceGoneFilter(logging.Filter):
    """Turns python-zeroconf's (and asyncio's datagram) tracebacks for an interface that
    went away into one quiet line: the interface watch makes a new instance anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) and exc.errno in GONE_ERRNOS:
            record.msg = "discovery send failed reason=%s (an interface went down)"
            record.args = (exc.strerror,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_interface_errors() -> None:
    """Install `InterfaceGoneFilter` on the loggers that report mDNS send errors (once)."""
    for name in ("zeroconf", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, InterfaceGoneFilter) for f in logger.filters):
            logger.addFilter(InterfaceGoneFilter())


class _HeardListener(RecordUpdateListener):
    """Passes the name of every fresh SRV/TXT record of our service type to `heard`.

    The browser reports only services that are new or changed; this also catches a
    known peer announcing itself again (after its link came back, say).
    """

    def __init__(self, heard: Callable[[str], None]) -> None:
        super().__init__()
        self._heard = heard

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record: DNSRecord = update.new
            if record.name.endswith("." + SERVICE_TYPE) and not record.is_expired(now):
                self._heard(record.name)


class Discovery:
    """Announce this node and record the nodes heard on the LAN; see the module docstring.

    `network_id` is called at every poll, so a node that joins a network while running
    announces it without a restart. `on_peer` is called (in the event loop, must not
    block) with the peers-table row each time a node of our network is heard.
    """

    def __init__(
        self,
        node_id: str,
        network_id: Callable[[], str],
        sync_port: int,
        peers: PeerTable,
        on_peer: Callable[[Peer], None] | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.node_id = node_id
        self.network_id = network_id
        self.sync_port = sync_port
        self.peers = peers
        self.on_peer = on_peer
        self.poll_seconds = poll_seconds
        self._zeroconf: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._current: tuple[str, tuple[LocalAddress, ...]] | None = None
        self._networks: list[ipaddress.IPv4Network] = []
        self._watch: asyncio.Task[None] | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._last_heard: dict[str, float] = {}
        self._logged: set[str] = set()  # what was logged once: kind:node id, kind:name
        self._own_name = f"{node_id}.{SERVICE_TYPE}"
        quiet_interface_errors()

    def service_info(self, network_id: str, addresses: list[str]) -> AsyncServiceInfo:
        """The service this node registers when its addresses are `addresses`."""
        return AsyncServiceInfo(
            SERVICE_TYPE,
            self._own_name,
            addresses=[socket.inet_aton(a) for a in addresses],
            port=self.sync_port,
            properties=txt_properties(self.node_id, network_id),
            server=f"{self.node_id}.local.",
        )

    async def start(self) -> None:
        """Announce and browse on the current interfaces, then follow their changes.

        Returns at once: the work runs in a task, and a failure there is logged and retried
        at the next poll, never raised into the node.
        """
        log.info("discovery start node_id=%s sync_port=%d", self.node_id, self.sync_port)
        self._watch = asyncio.create_task(self._follow_interfaces())

    async def stop(self) -> None:
        """Say goodbye on the LAN and stop."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self._close_zeroconf()
        self._current = None
        log.info("discovery stop node_id=%s", self.node_id)

    async def _follow_interfaces(self) -> None:
        while True:
            try:
                await self._refresh()
            except Exception:  # keep following: the next poll may succeed
                log.exception("discovery refresh failed node_id=%s", self.node_id)
                await self._close_zeroconf()
                self._current = None
            await asyncio.sleep(self.poll_seconds)

    async def _refresh(self) -> None:
        """Make the Zeroconf instance anew if the addresses or the network id changed."""
        wanted = (self.network_id(), tuple(local_addresses()))
        if wanted == self._current:
            return
        network_id, addresses = wanted
        await self._close_zeroconf()
        self._current = wanted
        self._networks = [a.network for a in addresses]
        if not addresses:
            log.warning("discovery idle reason=no-interface node_id=%s", self.node_id)
            return
        ips = [a.address for a in addresses]
        log.info(
            "discovery announce node_id=%s network_id=%s addresses=%s port=%d",
            self.node_id, network_id or "-", ",".join(ips), self.sync_port,
        )  # fmt: skip
        zc = AsyncZeroconf(interfaces=ips, ip_version=IPVersion.V4Only)
        self._zeroconf = zc
        zc.zeroconf.async_add_listener(_HeardListener(self._heard), None)
        self._browser = AsyncServiceBrowser(
            zc.zeroconf, SERVICE_TYPE, handlers=[self._on_service_state_change]
        )
        try:
            await (await zc.async_register_service(self.service_info(network_id, ips)))
        except NonUniqueNameException:
            log.error(
                "discovery name conflict node_id=%s: another device announces this node id "
                "(a cloned disk?); not announcing",
                self.node_id,
            )

    async def _close_zeroconf(self) -> None:
        for task in self._resolving.values():
            task.cancel()
        self._resolving.clear()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._zeroconf is not None:
            await self._zeroconf.async_close()  # unregisters: goodbye packets where possible
            self._zeroconf = None

    def _on_service_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            log.info("peer goodbye name=%s", name)
        else:
            self._heard(name)

    def _heard(self, name: str) -> None:
        """A record of service `name` arrived: resolve it (at most once a second)."""
        loop = asyncio.get_running_loop()
        if self._zeroconf is None or name in self._resolving or name == self._own_name:
            return
        if loop.time() - self._last_heard.get(name, -HEARD_MIN_INTERVAL) < HEARD_MIN_INTERVAL:
            return
        if len(self._last_heard) >= MAX_TRACKED:
            self._last_heard.clear()
        self._last_heard[name] = loop.time()
        task = loop.create_task(self._resolve(self._zeroconf, name))
        self._resolving[name] = task
        task.add_done_callback(self._resolved)

    def _resolved(self, task: asyncio.Task[None]) -> None:
        for name, running in list(self._resolving.items()):
            if running is task:
                del self._resolving[name]

    async def _resolve(self, zc: AsyncZeroconf, name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
            log.debug("peer unresolved name=%s", name)
            return
        try:
            await self.record(parse_announcement(info, self._networks))
        except InvalidAnnouncement as exc:
            self._log_once(
                f"invalid:{name}", "peer announcement ignored name=%s reason=%s", name, exc
            )
        except Exception:  # a task of its own: report, never take the node down
            log.exception("peer record failed name=%s", name)

    async def record(self, heard: Announcement) -> Peer | None:
        """Write an announcement to the peers table and tell `on_peer` about our network's."""
        if heard.node_id == self.node_id:
            return None
        network_id = self.network_id()
        address = f"{heard.host}:{heard.port}"
        foreign = heard.network_id != network_id
        if foreign:
            self._log_once(
                f"foreign:{heard.node_id}",
                "peer foreign network node_id=%s network_id=%s address=%s",
                heard.node_id, heard.network_id or "-", address,
                level=logging.WARNING,
            )  # fmt: skip
        else:
            self._log_once(
                f"discovered:{heard.node_id}",
                "peer discovered node_id=%s address=%s", heard.node_id, address,
            )  # fmt: skip
        peer = await self.peers.upsert_seen(
            heard.node_id, heard.network_id, heard.host, heard.port, foreign
        )
        if peer is None:
            self._log_once("full", "peer table full; ignoring new node_id=%s", heard.node_id)
        elif not foreign and self.on_peer is not None:
            self.on_peer(peer)
        return peer

    def _log_once(self, key: str, message: str, *args: object, level: int = logging.INFO) -> None:
        if key not in self._logged:
            if len(self._logged) >= MAX_TRACKED:
                self._logged.clear()
            self._logged.add(key)
            log.log(level, message, *args)
