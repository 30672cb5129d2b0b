"""Mutual TLS 1.3 contexts for node-to-node and node-to-hub sessions, and the peer check.

Both ends present their node certificate, require the other's (`CERT_REQUIRED`), trust
only the network root certificate (no system CAs), and speak TLS 1.3 only. When a
revocation list is given it is loaded as a CRL with leaf checking, so OpenSSL refuses a
revoked peer inside the handshake. Host names are not checked: peers are identified by
node id, and manual peer addresses are bare IPs. The server issues no session tickets, so
every session is fully verified again.

Python's `ssl` cannot call back into Python during verification, so the Simpul-specific
checks run right after the handshake: callers MUST call `check_peer` on the connection's
`ssl_object` (asyncio: ``writer.get_extra_info("ssl_object")``) before reading or writing
any record, and close the connection if it raises `CertificateRejected`. It re-verifies the
certificate against the root with Simpul's profile (node id bound to the key, role, scope
inside the network), against the *current* revocation list (a context keeps the list it
was built with; build a fresh context when a newer list arrives, and `follow_newest` lets
a listening context hand each new handshake to it), and optionally against the node id
the caller expected (from DNS-SD or the peer table).

`load_cert_chain` only reads files, and `load_verify_locations` takes CRLs only from a file,
so the trust anchor + CRL, the certificate and the key are written to a private temporary
directory (0700, files 0600; under `private_dir` if given), the key additionally encrypted
under a one-time password, and removed as soon as OpenSSL has loaded them.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from simpul.crypto.node_certificate import (
    CertificateRejected,
    NodeCertificate,
    RejectReason,
    verify_node_certificate,
)
from simpul.crypto.node_key import NodeKey, write_private_file
from simpul.crypto.revocation import RevocationList

log = logging.getLogger(__name__)


def _load_files(
    context: ssl.SSLContext,
    trust_pem: bytes,
    node_key: NodeKey,
    node_cert_pem: bytes,
    private_dir: Path | None,
) -> None:
    """Load trust anchors (+ CRL) and our identity through short-lived private files."""
    password = os.urandom(32).hex().encode()
    key_pem = node_key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="simpul-tls-", dir=private_dir) as tmp:
        trust_path = Path(tmp, "trust.pem")
        cert_path, key_path = Path(tmp, "node.crt"), Path(tmp, "node.key")
        write_private_file(trust_path, trust_pem)
        write_private_file(cert_path, node_cert_pem)
        write_private_file(key_path, key_pem)
        context.load_verify_locations(cafile=trust_path)
        context.load_cert_chain(cert_path, key_path, password=password)


def _context(
    protocol: int,
    node_key: NodeKey,
    node_cert_pem: bytes,
    root_cert_pem: bytes,
    revocations: RevocationList | None,
    private_dir: Path | None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    trust_pem = root_cert_pem
    if revocations is not None:
        revocations.verify(root_cert_pem)
        trust_pem += b"\n" + revocations.to_pem()
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    _load_files(context, trust_pem, node_key, node_cert_pem, private_dir)
    return context


def server_context(
    node_key: NodeKey,
    node_cert_pem: bytes,
    root_cert_pem: bytes,
    revocations: RevocationList | None,
    *,
    private_dir: Path | None = None,
) -> ssl.SSLContext:
    """The context a node or hub listens with (mutual TLS 1.3, root as only anchor)."""
    context = _context(
        ssl.PROTOCOL_TLS_SERVER, node_key, node_cert_pem, root_cert_pem, revocations, private_dir
    )
    context.num_tickets = 0
    return context


def client_context(
    node_key: NodeKey,
    node_cert_pem: bytes,
    root_cert_pem: bytes,
    revocations: RevocationList | None,
    *,
    private_dir: Path | None = None,
) -> ssl.SSLContext:
    """The context a node connects to a peer or the hub with."""
    return _context(
        ssl.PROTOCOL_TLS_CLIENT, node_key, node_cert_pem, root_cert_pem, revocations, private_dir
    )


def check_peer(
    peer: ssl.SSLObject | ssl.SSLSocket | bytes,
    root_cert_pem: bytes,
    revocations: RevocationList | None,
    now: datetime | None = None,
    *,
    expected_node_id: str | None = None,
) -> NodeCertificate:
    """The verified certificate of the peer of a finished handshake (or its DER bytes).

    Raises CertificateRejected; the caller closes the connection then.
    """
    der = peer if isinstance(peer, bytes) else peer.getpeercert(binary_form=True)
    if not der:
        raise CertificateRejected(RejectReason.NO_CERTIFICATE, "peer sent no certificate")
    certificate = verify_node_certificate(der, root_cert_pem, now=now, revocations=revocations)
    if expected_node_id is not None and certificate.node_id != expected_node_id:
        raise CertificateRejected(
            RejectReason.UNEXPECTED_NODE,
            f"expected node {expected_node_id}, peer is node {certificate.node_id}",
        )
    log.debug("peer %s (%s) verified", certificate.node_id, certificate.name)
    return certificate


def follow_newest(listening: ssl.SSLContext, newest: Callable[[], ssl.SSLContext]) -> None:
    """Make every handshake on `listening` use the context `newest()` returns at that moment.

    A listening socket keeps the context it was opened with; switching the connection's
    context in the SNI callback (called for every ClientHello, with or without a server
    name, before the client's certificate is verified) lets a context built for a newer
    revocation list refuse a revoked peer in the handshake without reopening the port.
    `newest` must not raise.
    """

    def pick(ssl_object: ssl.SSLObject, _name: str | None, _: ssl.SSLContext) -> None:
        current = newest()
        if current is not listening:
            ssl_object.context = current

    listening.sni_callback = pick
