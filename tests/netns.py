"""A real multi-host LAN on one machine, for tests that need one (root and `ip netns`).

`Lan(hosts)` builds, with `ip`:

- a namespace `smp-<random>-br` holding only a bridge `br0` (multicast snooping off), so
  nothing is added to the machine's own namespace and no existing interface is touched;
- `hosts` namespaces `smp-<random>-<i>`, each with loopback up and an interface `eth0`
  (a veth pair whose other end is a port of the bridge) addressed `10.213.<random>.<i+1>/24`,
  with the multicast route `224.0.0.0/4 dev eth0` that mDNS needs.

Traffic between the hosts stays on that bridge: the subnet exists only inside these
namespaces. `add_upstream()` adds one more namespace `smp-<random>-up` (the district hub's
side of the internet: a bridge `br1` addressed `10.214.<random>.1/24`) that the office
hosts have no route to until `link_upstream(i)` gives host i an interface `wan0` on it
(`unlink_upstream(i)` takes it away again). `add_island()` adds a namespace with loopback
only, reachable by no host.

`spawn(i, argv)` runs a program on host i (`ip netns exec`); `close()` kills every
process still in the namespaces (they are all the test's own) and deletes them.

Tests get a factory from the `lan` fixture (`net = lan(3)`; import `lan_fixture` from this
module to use it), which skips the test with the
reason when not root, without `ip`, or when `ip netns add` is refused, and always cleans up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

SUBNET_PREFIX = "10.213"
UPSTREAM_PREFIX = "10.214"
HOST_IFACE = "eth0"
UPSTREAM_IFACE = "wan0"
MULTICAST_ROUTE = "224.0.0.0/4"
MAX_HOSTS = 250


class IpError(RuntimeError):
    """An `ip` command failed; the message has the command and its stderr."""


class NetnsUnavailable(Exception):
    """This machine (or user) cannot create network namespaces; the message says why."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one `ip` command; IpError with its stderr when it fails and `check`."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise IpError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class Host:
    """One machine of the LAN: its namespace and its address on the bridge."""

    namespace: str
    address: str


class Lan:
    """A bridge and `hosts` namespaces on it; see the module docstring."""

    def __init__(self, hosts: int) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"a Lan has 1..{MAX_HOSTS} hosts, not {hosts}")
        tag = secrets.token_hex(3)
        self.bridge_namespace = f"smp-{tag}-br"
        self.subnet = f"{SUBNET_PREFIX}.{secrets.randbelow(256)}"
        self.hosts = [Host(f"smp-{tag}-{i}", f"{self.subnet}.{i + 1}") for i in range(hosts)]
        self._namespaces: list[str] = []
        self._processes: list[asyncio.subprocess.Process] = []
        self.upstream: Host | None = None

    def create(self) -> None:
        """Build the bridge and the hosts; on any failure undo what was made and raise.

        NetnsUnavailable when the first `ip netns add` is refused (no privilege, no kernel
        support); IpError for a later failure, which is a bug to see, not to skip.
        """
        try:
            ip("netns", "add", self.bridge_namespace)
        except IpError as exc:
            raise NetnsUnavailable(str(exc)) from exc
        self._namespaces.append(self.bridge_namespace)
        br = self.bridge_namespace
        try:
            ip("-n", br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            ip("-n", br, "link", "set", "br0", "up")
            for i, host in enumerate(self.hosts):
                self._add_host(i, host)
        except BaseException:
            self._delete_namespaces()
            raise

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _add_host(self, i: int, host: Host) -> None:
        br, port = self.bridge_namespace, f"v{i}"
        self._add_namespace(host.namespace)
        ip("-n", br, "link", "add", port, "type", "veth", "peer", "name", HOST_IFACE,
           "netns", host.namespace)  # fmt: skip
        ip("-n", br, "link", "set", port, "master", "br0", "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", HOST_IFACE)
        self.link_up(i)

    def link_down(self, i: int) -> None:
        """Take host i's interface down (its routes go with it, its address stays)."""
        ip("-n", self.hosts[i].namespace, "link", "set", HOST_IFACE, "down")

    def link_up(self, i: int) -> None:
        """Bring host i's interface up again, with its multicast route."""
        namespace = self.hosts[i].namespace
        ip("-n", namespace, "link", "set", HOST_IFACE, "up")
        ip("-n", namespace, "route", "replace", MULTICAST_ROUTE, "dev", HOST_IFACE)

    def add_upstream(self) -> Host:
        """The upstream namespace (no office host can reach it yet); its address."""
        tag = self.bridge_namespace.removesuffix("-br")
        subnet = f"{UPSTREAM_PREFIX}.{secrets.randbelow(256)}"
        self.upstream = Host(f"{tag}-up", f"{subnet}.1")
        self._add_namespace(self.upstream.namespace)
        up = self.upstream.namespace
        ip("-n", up, "link", "add", "br1", "type", "bridge")
        ip("-n", up, "addr", "add", f"{self.upstream.address}/24", "dev", "br1")
        ip("-n", up, "link", "set", "br1", "up")
        return self.upstream

    def add_island(self, name: str = "island") -> str:
        """One more namespace `smp-<random>-<name>` with loopback only: a host that no other
        can reach (a village node reached by USB alone); its name."""
        namespace = self.bridge_namespace.removesuffix("-br") + f"-{name}"
        self._add_namespace(namespace)
        return namespace

    def link_upstream(self, i: int) -> None:
        """Give host i an interface on the upstream bridge (address ….<i + 10>)."""
        assert self.upstream is not None, "add_upstream() first"
        up, host = self.upstream.namespace, self.hosts[i].namespace
        port = f"w{i}"
        ip("-n", up, "link", "add", port, "type", "veth", "peer", "name", UPSTREAM_IFACE,
           "netns", host)  # fmt: skip
        ip("-n", up, "link", "set", port, "master", "br1", "up")
        address = self.upstream.address.rsplit(".", 1)[0] + f".{i + 10}/24"
        ip("-n", host, "addr", "add", address, "dev", UPSTREAM_IFACE)
        ip("-n", host, "link", "set", UPSTREAM_IFACE, "up")

    def unlink_upstream(self, i: int) -> None:
        """Take host i's upstream interface away (both ends of the pair go)."""
        ip("-n", self.hosts[i].namespace, "link", "del", UPSTREAM_IFACE)

    async def spawn(self, i: int, argv: list[str], **kwargs: Any) -> asyncio.subprocess.Process:
        """Start `argv` on host i; killed at `close()` if still running."""
        return await self.spawn_in(self.hosts[i].namespace, argv, **kwargs)

    async def spawn_in(
        self, namespace: str, argv: list[str], **kwargs: Any
    ) -> asyncio.subprocess.Process:
        """Start `argv` in one of this Lan's namespaces (a host's, or the upstream one)."""
        process = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", namespace, *argv, **kwargs
        )
        self._processes.append(process)
        return process

    async def close(self) -> None:
        """Kill what runs in the namespaces and delete them (safe to call twice)."""
        for process in self._processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=10)
        self._processes.clear()
        self._delete_namespaces()

    def _delete_namespaces(self) -> None:
        for name in reversed(self._namespaces):
            for pid in ip("netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", name, check=False)
        self._namespaces.clear()


def netns_unavailable_reason() -> str | None:
    """Why this process cannot build a Lan, or None when it can try."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need the ip command (iproute2)"
    return None


@pytest.fixture(name="lan")
async def lan_fixture() -> AsyncIterator[Callable[[int], Lan]]:
    """A factory `lan(hosts) -> Lan`; every Lan made is torn down after the test."""
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    made: list[Lan] = []

    def make(hosts: int) -> Lan:
        net = Lan(hosts)
        try:
            net.create()
        except NetnsUnavailable as exc:
            pytest.skip(f"cannot build a network namespace LAN: {exc}")
        made.append(net)
        return net

    try:
        yield make
    finally:
        for net in made:
            await net.close()
