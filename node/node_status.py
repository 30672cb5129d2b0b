"""What `simpul status` and `GET /api/v1/status` show of a node: ids, network, counts,
frontier, refusals, peers, USB and uplink. Apart from the API so the command line need not load
aiohttp (a third of a second at every start, more on a Raspberry Pi)."""

from __future__ import annotations

from typing import Any

from simpul.crypto.x509_profile import common_name, load_certificate
from simpul.node import uplink_state
from simpul.node.membership import load_membership
from simpul.node.peers import PeerTable, with_refusals
from simpul.node.runtime import Node
from simpul.node.usb_status import read_status
from simpul.sync.engine import OpenTrust, SyncEngine
from simpul.sync.refusals import refused_per_origin


async def status_of(node: Node) -> dict[str, Any]:
    """The facts `simpul status` and `GET /api/v1/status` show."""
    counts = await node.records.counts()
    membership = load_membership(node.data_dir)
    network: dict[str, Any] = {"network_id": None, "role": None, "scope": None, "expires": None}
    if membership is not None:
        cert = membership.certificate
        network = {
            "network_id": membership.network_id,
            "network_name": common_name(load_certificate(membership.root_cert).subject),
            "name": cert.name,
            "role": cert.role,
            "scope": list(cert.scope),
            "expires": cert.not_after.isoformat(),
        }
    refused = await refused_per_origin(node.db)
    peers = [with_refusals(peer.to_json(), refused) for peer in await PeerTable(node.db).list_all()]
    sync = await SyncEngine(node.db, node.key.node_id, OpenTrust()).status()
    return {
        "node_id": node.node_id,
        **network,
        **counts,
        "pending": sync.pending,
        "refused": refused,
        "frontier": {origin.hex(): seq for origin, seq in sync.frontier.items()},
        "peers": peers,
        "usb": read_status(node.data_dir),
        "uplink": uplink_state.facts(node.data_dir, sync.frontier),
        "photos": await node.photos.status(),
    }
