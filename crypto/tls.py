"""Mutual TLS 1.3 contexts for node-to-node and node-to-hub sessions, and the peer check.

Both ends present their node certificate, require the other's (`CERT_REQUIRED`), trust
only the network root certificate (no system CAs), and speak TLS 1.3 only. When a
revocation list is given it is loaded as a CRL with leaf checking, so OpenSSL refuses a
revoked peer inside the handshake. Host names are not checked: peers are identified by
node id, and manual peer addresses are bare IPs.

Session resumption (TLS 1.3 PSK with a fresh (EC)DHE exchange, so forward secrecy stays):
the server issues one session ticket per handshake, and a client context offers the
session of its last connection to the same server name (or address) when it opens the
next one. A resumed handshake skips the certificates (about 2.5 KB less on the wire) and
with them OpenSSL's chain and CRL check; the peer's certificate is carried in the session,
so `check_peer` below (which every caller runs on every connection, resumed or not)
still re-verifies it against the root and the *current* revocation list: a peer revoked
since the ticket was issued is refused as before. Tickets are encrypted under keys that
live in the server process only (a restart makes every ticket useless).

Refused handshakes are seen: a server context given `on_refused` calls it with a short
reason (`no-certificate`, `untrusted-certificate`, `revoked`, `protocol`) and the detail
whenever a client's handshake fails (no certificate, one from another root, not TLS 1.3);
a client that merely goes away is not a refusal.

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
from typing import Any, TypeVar

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

ContextT = TypeVar("ContextT", bound=ssl.SSLContext)
SESSION_TICKETS = 1  # per handshake: enough for the client's next connection
X509_V_ERR_CERT_REVOKED = 23

OnRefused = Callable[[ssl.SSLContext, str, str], None]
"""Called with the context in use (the hub's per-network one), a reason and the detail."""


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
    kind: type[ContextT],
    protocol: int,
    node_key: NodeKey,
    node_cert_pem: bytes,
    root_cert_pem: bytes,
    revocations: RevocationList | None,
    private_dir: Path | None,
) -> ContextT:
    context = kind(protocol)
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


def refusal_reason(error: ssl.SSLError) -> str | None:
    """Why a server's handshake failed, in one word; None when the client just went away."""
    if isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
        return None
    if error.reason == "CALLBACK_FAILED":  # our server-name callback refused, and said why
        return None
    if isinstance(error, ssl.SSLCertVerificationError):
        revoked = error.verify_code == X509_V_ERR_CERT_REVOKED
        return "revoked" if revoked else "untrusted-certificate"
    if error.reason in {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_REQUIRED"}:
        return "no-certificate"
    return "protocol"


class _WatchedServerObject(ssl.SSLObject):
    """A server-side TLS object that reports a refused handshake before it fails."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            reason = refusal_reason(exc)
            on_refused = getattr(self.context, "on_refused", None)
            if reason is not None and on_refused is not None:
                on_refused(self.context, reason, getattr(exc, "verify_message", "") or str(exc))
            raise


class ServerContext(ssl.SSLContext):
    """A server context whose failed handshakes reach `on_refused` (see the module doc)."""

    on_refused: OnRefused | None = None


class ResumingContext(ssl.SSLContext):
    """A client context that offers each server the TLS 1.3 session of its last
    connection there, keyed by the server name or address dialled (not the port: two
    servers on one address share a slot, and a session offered to the wrong one only
    costs the full handshake it would have had anyway)."""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: Any = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        last: dict[str, ssl.SSLObject] = self.__dict__.setdefault("_last", {})
        key = str(server_hostname or "")
        previous = last.pop(key, None)
        if session is None and previous is not None:
            try:
                held = previous.session
            except ValueError:  # OpenSSL cannot hand it over (its handshake was cut)
                held = None
            session = held if held is not None and held.has_ticket else None
        try:
            made = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        except ValueError:  # "i2d() failed": a session from a link cut mid-handshake
            if session is None:
                raise
            made = super().wrap_bio(incoming, outgoing, server_side, server_hostname, None)
        last[key] = made
        return made


def server_context(
    node_key: NodeKey,
    node_cert_pem: bytes,
    root_cert_pem: bytes,
    revocations: RevocationList | None,
    *,
    private_dir: Path | None = None,
    on_refused: OnRefused | None = None,
) -> ServerContext:
    """The context a node or hub listens with (mutual TLS 1.3, root as only anchor)."""
    context = _context(
        ServerContext, ssl.PROTOCOL_TLS_SERVER, node_key, node_cert_pem, root_cert_pem,
        revocations, private_dir,
    )  # fmt: skip
    context.num_tickets = SESSION_TICKETS
    # stateful tickets: a short id into this context's session cache, not the session (with
    # the client's certificate) encrypted into a ticket of about 1 KB sent both ways. OpenSSL
    # forgets a session whose connection ended without close_notify (a cut link): the next
    # connection then makes a full handshake, as it would without resumption.
    context.options |= ssl.OP_NO_TICKET
    context.on_refused = on_refused
    context.sslobject_class = _WatchedServerObject
    return context


def client_context(
    node_key: NodeKey,
    node_cert_pem: bytes,
    root_cert_pem: bytes,
    revocations: RevocationList | None,
    *,
    private_dir: Path | None = None,
) -> ResumingContext:
    """The context a node connects to a peer or the hub with (resumes where it can)."""
    return _context(
        ResumingContext, ssl.PROTOCOL_TLS_CLIENT, node_key, node_cert_pem, root_cert_pem,
        revocations, private_dir,
    )  # fmt: skip


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
