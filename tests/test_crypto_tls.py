"""Mutual TLS 1.3 between nodes over real sockets on 127.0.0.1, and the post-handshake check."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from simpul.crypto import x509_profile
from simpul.crypto.network_root import NetworkRoot, create_network
from simpul.crypto.node_certificate import (
    CertificateRejected,
    NodeCertificate,
    RejectReason,
    issue_node_certificate,
)
from simpul.crypto.node_key import NodeKey
from simpul.crypto.revocation import RevocationList, empty_revocation_list, issue_revocation_list
from simpul.crypto.tls import check_peer, client_context, server_context

TIMEOUT = 10


@dataclass(frozen=True)
class Member:
    key: NodeKey
    cert_pem: bytes
    root: NetworkRoot

    @property
    def node_id(self) -> str:
        return self.key.node_id_hex

    def server(self, revocations: RevocationList | None) -> ssl.SSLContext:
        return server_context(self.key, self.cert_pem, self.root.cert_pem, revocations)

    def client(self, revocations: RevocationList | None) -> ssl.SSLContext:
        return client_context(self.key, self.cert_pem, self.root.cert_pem, revocations)


def _member(root: NetworkRoot, name: str, **kwargs: object) -> Member:
    key = NodeKey.generate()
    pem = issue_node_certificate(root, key.public_bytes, name, "office", ["1709"], **kwargs)  # type: ignore[arg-type]
    return Member(key, pem, root)


@pytest.fixture(scope="module")
def root() -> NetworkRoot:
    return create_network("Dinsos Kaur", ["1709"])


@pytest.fixture(scope="module")
def clean(root: NetworkRoot) -> RevocationList:
    return empty_revocation_list(root)


@pytest.fixture(scope="module")
def hub(root: NetworkRoot) -> Member:
    return _member(root, "Hub Kabupaten")


@pytest.fixture(scope="module")
def office(root: NetworkRoot) -> Member:
    return _member(root, "Kantor Desa")


@dataclass
class Outcome:
    """What each side saw of one session attempt."""

    server_saw: NodeCertificate | CertificateRejected | None = None  # None: no handshake
    client_read: bytes = b""
    client_error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return isinstance(self.server_saw, NodeCertificate) and self.client_read.startswith(b"OK")


async def _session(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    root_pem: bytes,
    check_revocations: RevocationList | None,
) -> Outcome:
    """One connection: the server runs check_peer after the handshake, as callers must."""
    outcome = Outcome()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = check_peer(writer.get_extra_info("ssl_object"), root_pem, check_revocations)
        except CertificateRejected as exc:
            outcome.server_saw = exc
        else:
            outcome.server_saw = peer
            writer.write(b"OK " + peer.node_id.encode())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        outcome.client_read = await reader.read()
        writer.close()
    except (ssl.SSLError, ConnectionError) as exc:
        outcome.client_error = exc
    finally:
        server.close()
        await server.wait_closed()
    return outcome


async def _attempt(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    root_pem: bytes,
    check_revocations: RevocationList | None = None,
) -> Outcome:
    return await asyncio.wait_for(
        _session(server_ctx, client_ctx, root_pem, check_revocations), TIMEOUT
    )


def _bare_client(root_pem: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=root_pem.decode())
    return context


async def test_two_admitted_nodes_handshake(
    root: NetworkRoot, clean: RevocationList, hub: Member, office: Member
) -> None:
    outcome = await _attempt(hub.server(clean), office.client(clean), root.cert_pem, clean)
    assert outcome.ok, outcome
    assert isinstance(outcome.server_saw, NodeCertificate)
    assert outcome.server_saw.node_id == office.node_id
    assert outcome.client_read == b"OK " + office.node_id.encode()


async def test_client_verifies_the_server_and_tls13_is_used(
    root: NetworkRoot, clean: RevocationList, hub: Member, office: Member
) -> None:
    server = await asyncio.start_server(
        lambda r, w: w.close(), "127.0.0.1", 0, ssl=hub.server(clean)
    )
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=office.client(clean))
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.3"
        peer = check_peer(ssl_object, root.cert_pem, clean, expected_node_id=hub.node_id)
        assert peer.name == "Hub Kabupaten"
        with pytest.raises(CertificateRejected) as info:
            check_peer(ssl_object, root.cert_pem, clean, expected_node_id=office.node_id)
        assert info.value.reason is RejectReason.UNEXPECTED_NODE
        writer.close()


async def test_client_without_certificate_is_refused(
    root: NetworkRoot, clean: RevocationList, hub: Member
) -> None:
    outcome = await _attempt(hub.server(clean), _bare_client(root.cert_pem), root.cert_pem)
    assert outcome.server_saw is None and not outcome.ok


async def test_other_networks_certificate_is_refused(
    root: NetworkRoot, clean: RevocationList, hub: Member
) -> None:
    other_root = create_network(root.name, ["1709"])
    stranger = _member(other_root, "Kantor Desa")
    # the stranger even trusts our root, but its own certificate comes from another root
    client = client_context(stranger.key, stranger.cert_pem, root.cert_pem, None)
    outcome = await _attempt(hub.server(clean), client, root.cert_pem)
    assert outcome.server_saw is None and not outcome.ok
    # and a client of our network refuses a server of the other network
    outcome = await _attempt(stranger.server(None), _member(root, "x").client(clean), b"")
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)


async def test_expired_certificate_is_refused(
    root: NetworkRoot, clean: RevocationList, hub: Member
) -> None:
    expired = _member(root, "Lama", valid_days=5, now=datetime.now(UTC) - timedelta(days=30))
    outcome = await _attempt(hub.server(clean), expired.client(clean), root.cert_pem, clean)
    assert outcome.server_saw is None and not outcome.ok


async def test_revoked_node_is_refused_in_handshake_and_by_check_peer(
    root: NetworkRoot, clean: RevocationList, hub: Member
) -> None:
    lost = _member(root, "Laptop Hilang")
    revoked = issue_revocation_list(root, clean, lost.node_id, "laptop hilang")
    # a context built with the new list: OpenSSL refuses during the handshake
    outcome = await _attempt(hub.server(revoked), lost.client(clean), root.cert_pem, revoked)
    assert outcome.server_saw is None and not outcome.ok
    # a context still holding the old list: the post-handshake check refuses it
    outcome = await _attempt(hub.server(clean), lost.client(clean), root.cert_pem, revoked)
    assert isinstance(outcome.server_saw, CertificateRejected)
    assert outcome.server_saw.reason is RejectReason.REVOKED
    assert outcome.client_read == b""


async def test_self_signed_impostor_with_copied_identity_is_refused(
    root: NetworkRoot, clean: RevocationList, hub: Member, office: Member
) -> None:
    victim = NodeCertificate.parse(office.cert_pem)
    impostor_key = NodeKey.generate()
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(victim.certificate.subject)
        .issuer_name(root.certificate.subject)
        .public_key(impostor_key.private_key.public_key())
        .serial_number(victim.certificate.serial_number)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
    )
    for extension in victim.certificate.extensions:
        if not isinstance(extension.value, x509.SubjectKeyIdentifier):
            builder = builder.add_extension(extension.value, extension.critical)
    forged = builder.sign(impostor_key.private_key, None).public_bytes(serialization.Encoding.PEM)
    impostor = Member(impostor_key, forged, root)

    outcome = await _attempt(hub.server(clean), impostor.client(clean), root.cert_pem, clean)
    assert outcome.server_saw is None and not outcome.ok
    with pytest.raises(CertificateRejected) as info:
        check_peer(
            x509_profile.load_certificate(forged).public_bytes(serialization.Encoding.DER),
            root.cert_pem,
            clean,
        )
    assert info.value.reason is RejectReason.BAD_SIGNATURE


async def test_tls12_is_refused(
    root: NetworkRoot, clean: RevocationList, hub: Member, office: Member
) -> None:
    old_client = office.client(clean)
    old_client.minimum_version = ssl.TLSVersion.TLSv1_2
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    outcome = await _attempt(hub.server(clean), old_client, root.cert_pem)
    assert outcome.server_saw is None and outcome.client_error is not None

    old_server = hub.server(clean)
    old_server.minimum_version = ssl.TLSVersion.TLSv1_2
    old_server.maximum_version = ssl.TLSVersion.TLSv1_2
    outcome = await _attempt(old_server, office.client(clean), root.cert_pem)
    assert outcome.server_saw is None and outcome.client_error is not None


def test_contexts_are_strict_and_leave_no_key_files(
    tmp_path: Path, root: NetworkRoot, clean: RevocationList, hub: Member
) -> None:
    for make in (server_context, client_context):
        context = make(hub.key, hub.cert_pem, root.cert_pem, clean, private_dir=tmp_path)
        assert context.minimum_version is ssl.TLSVersion.TLSv1_3
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert not context.check_hostname
        assert context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
        assert [c["subject"] for c in context.get_ca_certs()] == [
            ((("commonName", "Dinsos Kaur"),),)
        ]
    assert list(tmp_path.iterdir()) == []


def test_check_peer_without_certificate() -> None:
    with pytest.raises(CertificateRejected) as info:
        check_peer(b"", b"", None)
    assert info.value.reason is RejectReason.NO_CERTIFICATE
