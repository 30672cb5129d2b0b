"""Network root: creation, the self-signed CA certificate, and the passphrase-encrypted file."""

from __future__ import annotations

import base64
import hashlib
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from simpul.crypto.network_root import (
    NetworkRoot,
    RootKeyError,
    WrongPassphrase,
    create_network,
)

FAST = 14  # scrypt work factor for tests that are not about the work factor


def _raw_private(root: NetworkRoot) -> bytes:
    return root.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_create_network_makes_a_self_signed_ca_with_fingerprint_id() -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    root = create_network("Dinsos Kab. Bengkulu Selatan", ["1709", "17.01"], now=now)
    cert = root.certificate
    der = cert.public_bytes(serialization.Encoding.DER)
    assert root.network_id == hashlib.sha256(der).hexdigest()
    assert root.name == "Dinsos Kab. Bengkulu Selatan"
    assert root.scope == ("1701", "1709")
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert cert.not_valid_after_utc - now > timedelta(days=20 * 365)
    assert cert.not_valid_before_utc <= now


@pytest.mark.parametrize(
    ("name", "scope"), [("", ["17"]), ("x" * 65, ["17"]), ("N", []), ("N", ["17a"]), ("N", "17")]
)
def test_create_network_refuses_bad_arguments(name: str, scope: list[str]) -> None:
    with pytest.raises(ValueError):
        create_network(name, scope)


def test_save_and_load_with_passphrase(tmp_path: Path) -> None:
    root = create_network("Kantor", ["1709"])
    path = tmp_path / "admin" / "network-root.pem"
    root.save(path, "kopi tubruk 7 kali")  # default (production) work factor
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name(path.name + ".tmp").exists()
    loaded = NetworkRoot.load(path, "kopi tubruk 7 kali")
    assert loaded.network_id == root.network_id
    assert _raw_private(loaded) == _raw_private(root)


def test_root_key_never_stored_in_clear(tmp_path: Path) -> None:
    root = create_network("Kantor", ["1709"])
    path = tmp_path / "root.pem"
    root.save(path, "rahasia", scrypt_log2_n=FAST)
    data = path.read_bytes()
    raw = _raw_private(root)
    pkcs8 = root.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for clear in (raw, pkcs8, raw.hex().encode(), base64.b64encode(raw), base64.b64encode(pkcs8)):
        assert clear not in data
    assert b"PRIVATE KEY" not in data
    assert b"BEGIN SIMPUL ENCRYPTED ROOT KEY" in data
    assert root.cert_pem in data


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "root.pem"
    create_network("Kantor", ["1709"]).save(path, "benar", scrypt_log2_n=FAST)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        NetworkRoot.load(path, "salah")
    with pytest.raises(RootKeyError, match="must not be empty"):
        NetworkRoot.load(path, "")


def test_export_import_round_trip_is_one_self_contained_blob() -> None:
    root = create_network("Kantor", ["1709"])
    blob = root.to_file_bytes("pass", scrypt_log2_n=FAST)
    again = NetworkRoot.from_file_bytes(blob, "pass")
    assert again.network_id == root.network_id
    assert again.certificate == root.certificate
    # every export is freshly salted
    assert root.to_file_bytes("pass", scrypt_log2_n=FAST) != blob


def test_tampered_or_mismatched_files_are_refused(tmp_path: Path) -> None:
    root = create_network("Kantor", ["1709"])
    other = create_network("Kantor", ["1709"])
    blob = root.to_file_bytes("pass", scrypt_log2_n=FAST)
    cert_end = blob.index(b"-----BEGIN SIMPUL")
    key_block = blob[cert_end:]

    with pytest.raises(RootKeyError, match="does not match"):
        NetworkRoot.from_file_bytes(other.cert_pem + key_block, "pass")

    lines = key_block.split(b"\n")
    body = bytearray(base64.b64decode(b"".join(lines[1:-2])))
    body[-1] ^= 1
    b64 = base64.b64encode(bytes(body))
    tampered = root.cert_pem + b"\n".join([lines[0], b64, *lines[-2:]])
    with pytest.raises(WrongPassphrase):
        NetworkRoot.from_file_bytes(tampered, "pass")

    with pytest.raises(RootKeyError, match="no encrypted root key"):
        NetworkRoot.from_file_bytes(root.cert_pem, "pass")
    with pytest.raises(RootKeyError, match="certificate"):
        NetworkRoot.from_file_bytes(key_block, "pass")
    with pytest.raises(RootKeyError, match="cannot read"):
        NetworkRoot.load(tmp_path / "missing.pem", "pass")
    with pytest.raises(ValueError, match="work factor"):
        root.to_file_bytes("pass", scrypt_log2_n=8)
