"""`_meta.delivered` on records: does the hub hold each record's latest change?

A record's changes are entries `(origin, seq)` in its feeds; the hub holds all of them
when, for every origin, the record's highest seq is within the hub frontier (which this
node learnt from the hub, or from the office's uplink over LAN sync). `None` when no hub
is configured.
"""

from __future__ import annotations

import uuid
from typing import Any

from simpul.node import uplink_state
from simpul.node.runtime import Node

MAX_IDS_PER_QUERY = 500


async def mark_delivered(node: Node, records: list[dict[str, Any]]) -> None:
    """Set `_meta.delivered` on each of `records` (JSON documents with an `id`)."""
    if not records:
        return
    if uplink_state.load_config(node.data_dir).hub is None:
        for record in records:
            record["_meta"]["delivered"] = None
        return
    held = uplink_state.load_state(node.data_dir).hub_frontier
    late: set[bytes] = set()
    ids = [uuid.UUID(record["id"]).bytes for record in records]
    for start in range(0, len(ids), MAX_IDS_PER_QUERY):
        part = ids[start : start + MAX_IDS_PER_QUERY]
        rows = await node.db.fetchall(
            "SELECT record_id, origin, max(seq) FROM entries"
            f" WHERE record_id IN ({','.join('?' * len(part))}) GROUP BY record_id, origin",
            part,
        )
        late.update(bytes(rid) for rid, origin, seq in rows if seq > held.get(origin.hex(), 0))
    for record, rid in zip(records, ids, strict=True):
        record["_meta"]["delivered"] = rid not in late
