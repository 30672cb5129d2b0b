"""Revocation lists: numbering, root signature, time semantics, serialisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from simpul.crypto.network_root import NetworkRoot, create_network
from simpul.crypto.node_key import NodeKey
from simpul.crypto.revocation import (
    RevocationList,
    RevocationListRejected,
    empty_revocation_list,
    issue_revocation_list,
)

T0 = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def root() -> NetworkRoot:
    return create_network("Dinsos", ["1709"], now=T0 - timedelta(days=1))


def _node_id() -> str:
    return NodeKey.generate().node_id_hex


def test_lists_are_numbered_and_cumulative(root: NetworkRoot) -> None:
    a, b = _node_id(), _node_id()
    empty = empty_revocation_list(root, now=T0)
    first = issue_revocation_list(root, empty, a, "laptop hilang", now=T0 + timedelta(hours=1))
    second = issue_revocation_list(root, first, b, "rusak", now=T0 + timedelta(hours=2))
    assert (empty.number, first.number, second.number) == (0, 1, 2)
    assert empty.entries == ()
    assert [e.node_id for e in second.entries] == [a, b]
    assert second.entries[0].reason == "laptop hilang"
    assert second.entries[1].revoked_at == T0 + timedelta(hours=2)
    assert second.issued_at == T0 + timedelta(hours=2)
    assert second.supersedes(first) and first.supersedes(empty)
    assert not first.supersedes(second) and not first.supersedes(first)
    assert issue_revocation_list(root, None, a, "x", now=T0).number == 1


def test_is_revoked_at_times(root: NetworkRoot) -> None:
    node, other = _node_id(), _node_id()
    revoked_at = T0 + timedelta(days=2)
    revocations = issue_revocation_list(
        root, None, node, "dicuri", now=T0 + timedelta(days=5), revoked_at=revoked_at
    )
    assert revocations.is_revoked(node)
    assert revocations.is_revoked(node, at=revoked_at)
    assert revocations.is_revoked(node, at=revoked_at + timedelta(seconds=1))
    # signed (checkpointed) before the revocation took effect: still valid
    assert not revocations.is_revoked(node, at=revoked_at - timedelta(seconds=1))
    assert not revocations.is_revoked(other)
    assert not revocations.is_revoked(other, at=revoked_at)
    with pytest.raises(ValueError, match="timezone"):
        revocations.is_revoked(node, at=datetime(2025, 6, 3))


def test_serialise_parse_and_verify(root: NetworkRoot) -> None:
    revocations = issue_revocation_list(root, None, _node_id(), "alasan: hilang", now=T0)
    pem = revocations.to_pem()
    assert pem.startswith(b"-----BEGIN X509 CRL-----")
    parsed = RevocationList.parse(pem)
    assert parsed.entries == revocations.entries and parsed.number == revocations.number
    parsed.verify(root.certificate)
    parsed.verify(root.cert_pem)
    der = parsed.crl.public_bytes(serialization.Encoding.DER)
    assert RevocationList.parse(der).entries == revocations.entries


def test_list_from_another_root_is_rejected(root: NetworkRoot) -> None:
    same_name = create_network(root.name, ["1709"], now=T0 - timedelta(days=1))
    other_name = create_network("Lain", ["1709"], now=T0 - timedelta(days=1))
    for stranger, message in ((same_name, "not signed"), (other_name, "another network")):
        foreign = issue_revocation_list(stranger, None, _node_id(), "x", now=T0)
        with pytest.raises(RevocationListRejected, match=message):
            foreign.verify(root.cert_pem)


def test_tampered_list_is_rejected(root: NetworkRoot) -> None:
    revocations = issue_revocation_list(root, None, _node_id(), "hilang", now=T0)
    der = bytearray(revocations.crl.public_bytes(serialization.Encoding.DER))
    at = der.index(b"hilang")
    der[at] ^= 0x01
    tampered = RevocationList.parse(bytes(der))
    with pytest.raises(RevocationListRejected, match="not signed"):
        tampered.verify(root.cert_pem)
    with pytest.raises(RevocationListRejected, match="malformed"):
        RevocationList.parse(bytes(der[:-10]))
    with pytest.raises(RevocationListRejected, match="malformed"):
        RevocationList.parse(b"garbage")


def test_foreign_crl_without_simpul_fields_is_malformed(root: NetworkRoot) -> None:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root.certificate.subject)
        .last_update(T0)
        .next_update(T0 + timedelta(days=1))
        .sign(root.private_key, None)
    )
    with pytest.raises(RevocationListRejected, match="malformed"):
        RevocationList.parse(crl.public_bytes(serialization.Encoding.PEM))


def test_issue_refuses_bad_requests(root: NetworkRoot) -> None:
    node = _node_id()
    first = issue_revocation_list(root, None, node, "hilang", now=T0)
    with pytest.raises(ValueError, match="already revoked"):
        issue_revocation_list(root, first, node, "lagi", now=T0)
    with pytest.raises(ValueError, match="reason"):
        issue_revocation_list(root, first, _node_id(), "", now=T0)
    with pytest.raises(ValueError, match="node id"):
        issue_revocation_list(root, first, "XYZ", "x", now=T0)
    with pytest.raises(ValueError, match="after the list"):
        issue_revocation_list(
            root, first, _node_id(), "x", now=T0, revoked_at=T0 + timedelta(days=1)
        )
    stranger = create_network(root.name, ["1709"], now=T0 - timedelta(days=1))
    with pytest.raises(RevocationListRejected):
        issue_revocation_list(stranger, first, _node_id(), "x", now=T0)
