"""Where the hub keeps each network's entries and records: an interface and its SQLite store.

The hub's sessions use only `NetworkStore` (the same calls a LAN session makes of a node's
`SyncEngine`: frontier, hello, outgoing frames, a receiver that verifies and commits), and
open networks through `HubStore`. The embedded default, `SqliteHubStore`, gives each
network its own SQLite file in the network's folder (`node/hub_networks.py`) and a
`SyncEngine` over it. A PostgreSQL store implements the same two protocols (one schema
per network, say) without touching the wire protocol or the hub's sessions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Protocol

from simpul.crypto.node_key import NodeKey
from simpul.node.hub_networks import network_folder
from simpul.node.hub_staging import (
    STAGING_DIR,
    FileStaging,
    Staging,
    StagingEngine,
    StagingReceiver,
)
from simpul.node.membership import Membership
from simpul.node.photos import Photos
from simpul.node.runtime import Node, open_node
from simpul.sync.bundle import Frame, Hello
from simpul.sync.engine import Receiver, SyncEngine, TrustPolicy
from simpul.sync.frontier import Frontier


class NetworkStore(Protocol):
    """One network's feeds and records at the hub, as its sync sessions use them."""

    network_id: bytes
    local_origin: bytes

    async def frontier(self) -> Frontier: ...

    def hello(self) -> Hello: ...

    def outgoing_frames(self, theirs: Mapping[bytes, int]) -> AsyncIterator[Frame]: ...

    def receiver(self) -> Receiver | StagingReceiver: ...

    @property
    def staging(self) -> Staging: ...


class HubStore(Protocol):
    """Opens the store of each network the hub serves, and closes them all."""

    async def open_network(self, membership: Membership, trust: TrustPolicy) -> NetworkStore: ...

    async def counts(self, network_id: str) -> dict[str, int]: ...

    def photos(self, network_id: str) -> Photos: ...

    async def close(self) -> None: ...


class SqliteHubStore:
    """The embedded default: one SQLite database per network, in the network's folder."""

    def __init__(self, hub_dir: Path, key: NodeKey) -> None:
        self.hub_dir = hub_dir
        self.key = key
        self._stack = AsyncExitStack()
        self._nodes: dict[str, Node] = {}

    async def open_network(self, membership: Membership, trust: TrustPolicy) -> StagingEngine:
        network_id = membership.network_id
        folder = network_folder(self.hub_dir, network_id)
        node = await self._stack.enter_async_context(open_node(folder, self.key))
        self._nodes[network_id] = node
        engine = SyncEngine(
            node.db,
            self.key.node_id,
            trust,
            network_id=bytes.fromhex(network_id),
            certificate=membership.certificate.pem,
        )
        return StagingEngine(engine, FileStaging(folder / STAGING_DIR))

    async def counts(self, network_id: str) -> dict[str, int]:
        return await self._nodes[network_id].records.counts()

    def photos(self, network_id: str) -> Photos:
        """The network's house photos: files in its folder, referenced from its records."""
        return self._nodes[network_id].photos

    async def close(self) -> None:
        await self._stack.aclose()
