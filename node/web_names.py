"""Names instead of codes on the operator page: devices by their display name (from the
certificates this node holds for every origin it has entries of, its own, and those the
admin's node admitted) and villages by their name (sync/regions.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from simpul.crypto.node_certificate import CertificateRejected, NodeCertificate
from simpul.node import membership
from simpul.node.runtime import Node
from simpul.sync import regions

log = logging.getLogger(__name__)


async def device_names(node: Node) -> dict[str, str]:
    """Node id (hex) -> display name, for every device this node can name."""
    names: dict[str, str] = {}
    for origin, certificate in await node.db.fetchall(
        "SELECT origin, certificate FROM origin_certificates"
    ):
        try:
            names[bytes(origin).hex()] = NodeCertificate.parse(bytes(certificate)).name
        except CertificateRejected:
            log.warning("device name unreadable origin=%s", bytes(origin).hex())
    member = membership.load_membership(node.data_dir)
    if member is not None:
        names[member.certificate.node_id] = member.certificate.name
        for node_id, name in membership.admitted_devices(node.data_dir).items():
            names.setdefault(node_id, name)
    return {node_id: name for node_id, name in names.items() if name}


def device_label(names: dict[str, str]) -> Callable[[str], str]:
    """`name` of a node id, or its first 12 hex digits when it has none here."""
    return lambda node_id: names.get(node_id) or node_id[:12]


async def village_label(node: Node) -> Callable[[str], str]:
    """`DESA 2013 (1709092013)` for a village code, or the code alone."""
    names = await regions.all_names(node.db)
    return lambda code: regions.village_label(code, names)
