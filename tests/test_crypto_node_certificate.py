"""Node certificates: issuing, parsing, and every way verification refuses one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from simpul.crypto import der, x509_profile
from simpul.crypto.network_root import NetworkRoot, create_network
from simpul.crypto.node_certificate import (
    CertificateRejected,
    NodeCertificate,
    RejectReason,
    in_scope,
    issue_node_certificate,
    verify_node_certificate,
)
from simpul.crypto.node_key import NodeKey
from simpul.crypto.revocation import empty_revocation_list, issue_revocation_list

NOW = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def root() -> NetworkRoot:
    return create_network("Dinsos Rejang Lebong", ["1702", "1709"], now=NOW - timedelta(days=30))


@pytest.fixture
def node() -> NodeKey:
    return NodeKey.generate()


def _issue(root: NetworkRoot, node: NodeKey, **kwargs: object) -> bytes:
    args: dict[str, object] = {"name": "Kantor Desa Air Putih", "role": "office"}
    args |= {"scope": ["1709042001"], "now": NOW} | kwargs
    return issue_node_certificate(root, node.public_bytes, **args)  # type: ignore[arg-type]


def _reason(cert: bytes, root: NetworkRoot, **kwargs: object) -> RejectReason:
    with pytest.raises(CertificateRejected) as info:
        verify_node_certificate(cert, root.cert_pem, **{"now": NOW, **kwargs})  # type: ignore[arg-type]
    return info.value.reason


def test_issue_and_parse_carries_all_fields(root: NetworkRoot, node: NodeKey) -> None:
    pem = _issue(root, node, scope=["17.09.04.2001", "1702"])
    cert = NodeCertificate.parse(pem)
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert cert.node_id == node.node_id_hex
    assert cert.name == "Kantor Desa Air Putih"
    assert cert.role == "office"
    assert cert.scope == ("1702", "1709042001")
    assert cert.public_key == node.public_bytes
    assert cert.not_after - cert.not_before >= timedelta(days=730)
    assert cert.not_before <= NOW <= cert.not_after
    assert cert.pem == pem
    x = cert.certificate
    assert x.serial_number == int(node.node_id_hex, 16)
    san = x.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:simpul:node:{node.node_id_hex}"
    ]
    info = x.extensions.get_extension_for_oid(x509_profile.NODE_INFO_OID)
    assert not info.critical
    assert not x.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.may_write("1709042001") and not cert.may_write("1709042002")
    # DER input parses the same
    assert NodeCertificate.parse(x.public_bytes(serialization.Encoding.DER)) == cert


def test_verify_accepts_a_member(root: NetworkRoot, node: NodeKey) -> None:
    revocations = empty_revocation_list(root, now=NOW)
    cert = verify_node_certificate(
        _issue(root, node, role="hub"), root.cert_pem, now=NOW, revocations=revocations
    )
    assert cert.node_id == node.node_id_hex and cert.role == "hub"


def test_validity_is_capped_by_the_root(root: NetworkRoot, node: NodeKey) -> None:
    cert = NodeCertificate.parse(_issue(root, node, valid_days=365 * 40))
    assert cert.not_after == root.certificate.not_valid_after_utc


def test_expired_and_not_yet_valid(root: NetworkRoot, node: NodeKey) -> None:
    pem = _issue(root, node, valid_days=10)
    assert _reason(pem, root, now=NOW + timedelta(days=11)) is RejectReason.EXPIRED
    assert _reason(pem, root, now=NOW - timedelta(days=1)) is RejectReason.NOT_YET_VALID
    verify_node_certificate(pem, root.cert_pem, now=NOW + timedelta(days=9))


def test_other_network_is_refused(root: NetworkRoot, node: NodeKey) -> None:
    differently_named = create_network("Dinsos Lain", ["1709"], now=NOW - timedelta(days=1))
    assert _reason(_issue(differently_named, node), root) is RejectReason.WRONG_ISSUER
    same_name = create_network(root.name, ["1709"], now=NOW - timedelta(days=1))
    assert _reason(_issue(same_name, node), root) is RejectReason.BAD_SIGNATURE


def test_revoked_from_its_revocation_time_on(root: NetworkRoot, node: NodeKey) -> None:
    pem = _issue(root, node)
    revoked_at = NOW + timedelta(days=3)
    revocations = issue_revocation_list(
        root,
        empty_revocation_list(root, now=NOW),
        node.node_id_hex,
        "laptop hilang",
        now=revoked_at,
    )
    assert _reason(pem, root, now=revoked_at, revocations=revocations) is RejectReason.REVOKED
    assert (
        _reason(pem, root, now=revoked_at + timedelta(days=1), revocations=revocations)
        is RejectReason.REVOKED
    )
    verify_node_certificate(
        pem, root.cert_pem, now=revoked_at - timedelta(seconds=1), revocations=revocations
    )


def test_tampered_byte_is_refused(root: NetworkRoot, node: NodeKey) -> None:
    der_bytes = bytearray(
        NodeCertificate.parse(_issue(root, node)).certificate.public_bytes(
            serialization.Encoding.DER
        )
    )
    at = der_bytes.index(b"Air Putih")
    der_bytes[at] ^= 0x20  # "air Putih"
    assert _reason(bytes(der_bytes), root) is RejectReason.BAD_SIGNATURE
    der_bytes[at] ^= 0x20
    der_bytes[-1] ^= 0x01  # last signature byte
    assert _reason(bytes(der_bytes), root) is RejectReason.BAD_SIGNATURE
    assert _reason(bytes(der_bytes[:-5]), root) is RejectReason.MALFORMED


def _forge(
    root: NetworkRoot, subject_key: NodeKey, claimed_node_id: str, serial_node_id: str
) -> bytes:
    """A root-signed certificate whose node id fields disagree with its key (a buggy issuer)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Palsu")]))
        .issuer_name(root.certificate.subject)
        .public_key(subject_key.private_key.public_key())
        .serial_number(int(serial_node_id, 16))
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"urn:simpul:node:{claimed_node_id}")]
            ),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(
                x509_profile.NODE_INFO_OID,
                x509_profile.encode_node_info(claimed_node_id, "office", ["1709"]),
            ),
            critical=False,
        )
    )
    return builder.sign(root.private_key, None).public_bytes(serialization.Encoding.PEM)


def test_node_id_must_match_the_key(root: NetworkRoot, node: NodeKey) -> None:
    victim = NodeKey.generate().node_id_hex
    own = node.node_id_hex
    assert _reason(_forge(root, node, victim, victim), root) is RejectReason.NODE_ID_MISMATCH
    assert _reason(_forge(root, node, own, victim), root) is RejectReason.NODE_ID_MISMATCH
    # the same construction with consistent ids verifies: the mismatch alone was refused
    assert verify_node_certificate(_forge(root, node, own, own), root.cert_pem, now=NOW)


def test_missing_extension_or_garbage_is_malformed(root: NetworkRoot) -> None:
    key = Ed25519PrivateKey.generate()
    plain = (
        x509.CertificateBuilder()
        .subject_name(root.certificate.subject)
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(root.private_key, None)
    )
    assert _reason(plain.public_bytes(serialization.Encoding.PEM), root) is RejectReason.MALFORMED
    assert _reason(b"not a certificate", root) is RejectReason.MALFORMED
    # the root certificate itself is not a node
    assert _reason(root.cert_pem, root) is RejectReason.MALFORMED


def test_issue_refuses_bad_arguments(root: NetworkRoot, node: NodeKey) -> None:
    with pytest.raises(ValueError, match="outside the network scope"):
        _issue(root, node, scope=["1801"])
    with pytest.raises(ValueError, match="role"):
        _issue(root, node, role="admin")
    with pytest.raises(ValueError, match="name"):
        _issue(root, node, name="")
    with pytest.raises(ValueError):
        issue_node_certificate(root, b"short", "x", "office", ["1709"])


@pytest.mark.parametrize(
    ("scope", "code", "expected"),
    [
        (["1709"], "1709042001", True),
        (["1709"], "17.09.04.2001", True),
        (["1709042001"], "1709042002", False),
        (["1709042001", "1702"], "1702010001", True),
        (["1709"], "170", False),
        ([], "1709042001", False),
        (["1709"], "1709abc", False),
        (["1709"], "", False),
    ],
)
def test_in_scope_is_a_prefix_match(scope: list[str], code: str, expected: bool) -> None:
    assert in_scope(scope, code) is expected


@pytest.mark.parametrize(
    "value",
    [
        b"\x30\x81\x00",  # non-minimal length
        b"\x30\x80\x00\x00",  # indefinite length
        b"\x30\x02\x04",  # truncated
        b"\x30\x00\x00",  # trailing byte
        b"\x31\x00",  # wrong tag
    ],
)
def test_der_reader_is_strict(value: bytes) -> None:
    reader = der.DerReader(value)
    with pytest.raises(der.DerError):
        reader.read_sequence()
        reader.finish()


def test_der_long_lengths_round_trip() -> None:
    content = bytes(300)
    reader = der.DerReader(der.encode(der.OCTET_STRING, content))
    assert reader.read(der.OCTET_STRING) == content
    reader.finish()
