"""The peers table: other nodes found on the LAN (mDNS) or typed in by an admin (manual).

An mDNS peer is keyed by its node id and follows it to a new address. A manual peer is
keyed by the address the admin gave (`simpul peer add HOST:PORT`, for WiFi with client
isolation) and has no node id until the sync scheduler has contacted it.

States: `discovered` (announced on the LAN, same network: a sync candidate), `foreign`
(announced, another network or none: never synced, kept so the admin can see it), `added`
(manual, not yet contacted), `synced` / `failed` (how the last sync session ended).
Shown, a synced peer that refuses our entries, or whose entries we refuse, is `refused`
(`with_refusals`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from simpul.sync.database import Database
from simpul.sync.refusals import RefusalSummary

log = logging.getLogger(__name__)

MDNS = "mdns"
MANUAL = "manual"
DISCOVERED = "discovered"
FOREIGN = "foreign"
ADDED = "added"
SYNCED = "synced"
FAILED = "failed"
REFUSED = "refused"  # shown only: sessions run, but entries are refused one way or the other
MAX_MDNS_PEERS = 1000  # a LAN flooded with fake announcements must not fill the disk

COLUMNS = (
    "id, node_id, network_id, host, port, source, state, first_seen_ms, last_seen_ms, "
    "last_sync_ms, entries_sent, entries_received, last_error, name, refused, refused_by_peer"
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Peer:
    """One row of the peers table."""

    id: int
    node_id: str | None
    network_id: str
    host: str
    port: int
    source: str
    state: str
    first_seen_ms: int | None
    last_seen_ms: int | None
    last_sync_ms: int | None
    entries_sent: int
    entries_received: int
    last_error: str | None
    name: str | None  # the display name in its certificate, once a session showed it
    refused: str | None  # JSON {reason: entries}: what we refused of its last session
    refused_by_peer: str | None  # JSON RefusalSummary: what it said it refuses

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        """The row as `simpul peers --json` and the status API show it: `refused` (what
        this node refused of the peer's last session) and `refused_by_peer` (what the peer
        says it refuses), each {reason: count}."""
        by_peer = RefusalSummary.from_json(json.loads(self.refused_by_peer or "{}"))
        return {
            **asdict(self),
            "address": self.address,
            "refused": json.loads(self.refused or "{}"),
            "refused_by_peer": by_peer.counts(),
        }


def refusal_columns(
    refused: Mapping[str, int], refused_by_peer: RefusalSummary | None
) -> tuple[str | None, str | None]:
    """The two refusal columns' values after a session (None: nothing refused)."""
    by_peer = refused_by_peer.to_header() if refused_by_peer else None
    return (json.dumps(dict(refused), sort_keys=True) if refused else None), by_peer


class PeerTable:
    """Reads and writes the peers table of one node's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert_seen(
        self, node_id: str, network_id: str, host: str, port: int, foreign: bool
    ) -> Peer | None:
        """Record an announcement heard now; None when the table holds too many mDNS peers.

        A peer of our network becomes `discovered` unless a sync already gave it a state;
        a peer of another network is `foreign` whatever it was. A manual row that has learnt
        this node id keeps the address the admin typed.
        """
        now = now_ms()
        async with self.db.write() as conn:
            async with conn.execute(
                "SELECT state FROM peers WHERE node_id = ?", (node_id,)
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                async with conn.execute(
                    "SELECT count(*) FROM peers WHERE source = ?", (MDNS,)
                ) as cursor:
                    count = (await cursor.fetchone())[0]
                if count >= MAX_MDNS_PEERS:
                    return None
                await conn.execute(
                    "INSERT INTO peers (node_id, network_id, host, port, source, state, "
                    "first_seen_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (node_id, network_id, host, port, MDNS, FOREIGN if foreign else DISCOVERED,
                     now, now),
                )  # fmt: skip
            else:
                state = row[0]
                if foreign:
                    state = FOREIGN
                elif state not in (SYNCED, FAILED):
                    state = DISCOVERED
                await conn.execute(
                    "UPDATE peers SET network_id = ?, state = ?, last_seen_ms = ?, "
                    "first_seen_ms = coalesce(first_seen_ms, ?), "
                    "host = CASE source WHEN ? THEN ? ELSE host END, "
                    "port = CASE source WHEN ? THEN ? ELSE port END WHERE node_id = ?",
                    (network_id, state, now, now, MDNS, host, MDNS, port, node_id),
                )
            async with conn.execute(
                f"SELECT {COLUMNS} FROM peers WHERE node_id = ?", (node_id,)
            ) as cursor:
                return Peer(*await cursor.fetchone())

    async def add_manual(self, host: str, port: int) -> Peer:
        """Remember HOST:PORT as a peer to sync with (adding it twice changes nothing)."""
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO peers (host, port, source, state) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (host, port) WHERE source = 'manual' DO NOTHING",
                (host, port, MANUAL, ADDED),
            )
            async with conn.execute(
                f"SELECT {COLUMNS} FROM peers WHERE source = ? AND host = ? AND port = ?",
                (MANUAL, host, port),
            ) as cursor:
                peer = Peer(*await cursor.fetchone())
        log.info("peer add address=%s source=manual id=%d", peer.address, peer.id)
        return peer

    async def mark_served(
        self,
        node_id: str,
        host: str | None = None,
        *,
        sent: int = 0,
        received: int = 0,
        name: str | None = None,
        refused: Mapping[str, int] | None = None,
        refused_by_peer: RefusalSummary | None = None,
    ) -> None:
        """Count a session that peer `node_id` (named `name`) started with us from `host` (a
        no-op if it is unknown); a manual peer at that host without a node id learns it.
        `refused`: what we refused of it, per reason; `refused_by_peer`: what it says it
        refuses."""
        async with self.db.write() as conn:
            if host:
                await conn.execute(
                    "UPDATE peers SET node_id = ? WHERE id = (SELECT id FROM peers"
                    " WHERE source = ? AND host = ? AND node_id IS NULL LIMIT 1)"
                    " AND NOT EXISTS (SELECT 1 FROM peers WHERE node_id = ?)",
                    (node_id, MANUAL, host, node_id),
                )
            await conn.execute(
                "UPDATE peers SET state = ?, last_error = NULL, last_sync_ms = ?,"
                " entries_sent = entries_sent + ?, entries_received = entries_received + ?,"
                " name = coalesce(?, name), refused = ?, refused_by_peer = ? WHERE node_id = ?",
                (
                    SYNCED,
                    now_ms(),
                    sent,
                    received,
                    name,
                    *refusal_columns(refused or {}, refused_by_peer),
                    node_id,
                ),
            )

    async def list_all(self) -> list[Peer]:
        """Every peer: manual ones first, then by node id."""
        rows = await self.db.fetchall(
            f"SELECT {COLUMNS} FROM peers ORDER BY source = ?, node_id, host, port", (MDNS,)
        )
        return [Peer(*row) for row in rows]

    async def mark_sync(
        self,
        peer_id: int,
        *,
        sent: int = 0,
        received: int = 0,
        error: str | None = None,
        node_id: str | None = None,
        name: str | None = None,
        refused: Mapping[str, int] | None = None,
        refused_by_peer: RefusalSummary | None = None,
    ) -> None:
        """Record how a sync session with peer `peer_id` ended (`error` None: it succeeded);
        `node_id` and `name`: who answered (a manual peer learns its node id unless another
        row has it); the refusals as in `mark_served` (kept as they were after a failure)."""
        async with self.db.write() as conn:
            if node_id:
                await conn.execute(
                    "UPDATE peers SET node_id = ? WHERE id = ? AND node_id IS NULL"
                    " AND NOT EXISTS (SELECT 1 FROM peers WHERE node_id = ?)",
                    (node_id, peer_id, node_id),
                )
            await conn.execute(
                "UPDATE peers SET state = ?, last_error = ?, "
                "last_sync_ms = CASE WHEN ? IS NULL THEN ? ELSE last_sync_ms END, "
                "entries_sent = entries_sent + ?, entries_received = entries_received + ?, "
                "name = coalesce(?, name) WHERE id = ?",
                (
                    FAILED if error else SYNCED,
                    error,
                    error,
                    now_ms(),
                    sent,
                    received,
                    name,
                    peer_id,
                ),
            )
            if error is None:
                await conn.execute(
                    "UPDATE peers SET refused = ?, refused_by_peer = ? WHERE id = ?",
                    (*refusal_columns(refused or {}, refused_by_peer), peer_id),
                )


def with_refusals(peer: dict[str, Any], refused: dict[str, dict[str, int]]) -> dict[str, Any]:
    """A peer row whose `refused` also counts what this node refuses of the peer's own feed
    (held entries, a chunk refused for good); a peer that synced but refuses, or is
    refused, is in state `refused`, not `synced`."""
    ours = dict(peer["refused"])
    for reason, count in refused.get(peer["node_id"] or "", {}).items():
        ours[reason] = max(ours.get(reason, 0), count)
    peer = {**peer, "refused": ours}
    if peer["state"] == SYNCED and (ours or peer["refused_by_peer"]):
        peer["state"] = REFUSED
    return peer
