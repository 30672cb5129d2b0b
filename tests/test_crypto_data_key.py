"""Data key: exchange key files, wrapping to one node, rotation after a revocation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from simpul.crypto.data_key import (
    WRAPPED_KEY_BYTES,
    DataKey,
    KeyUnwrapError,
    rotate_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from simpul.crypto.exchange_key import ExchangeKey
from simpul.crypto.network_root import NetworkRoot, create_network
from simpul.crypto.node_key import KeyFileError, NodeKey


@pytest.fixture(scope="module")
def root() -> NetworkRoot:
    return create_network("Dinsos", ["1709"])


def test_exchange_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "exchange.pem"
    key = ExchangeKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ExchangeKey.load_or_create(path).public_bytes == key.public_bytes
    node_key_path = tmp_path / "node.pem"
    NodeKey.load_or_create(node_key_path)
    with pytest.raises(KeyFileError, match="not an X25519 key"):
        ExchangeKey.load(node_key_path)
    with pytest.raises(KeyFileError, match="cannot read"):
        ExchangeKey.load(tmp_path / "missing.pem")


def test_data_key_basics() -> None:
    key = DataKey.generate()
    assert key.epoch == 1 and len(key.secret) == 32 and len(key.key_id) == 32
    assert key.secret.hex() not in repr(key)
    with pytest.raises(ValueError):
        DataKey(key.key_id, 0, key.secret)
    with pytest.raises(ValueError):
        DataKey(key.key_id, 1, b"short")


def test_wrap_unwrap_round_trip(root: NetworkRoot) -> None:
    key = DataKey.generate()
    node = ExchangeKey.generate()
    blob = wrap_data_key(root, key, node.public_bytes)
    assert len(blob) == WRAPPED_KEY_BYTES
    assert key.secret not in blob
    assert unwrap_data_key(blob, node, root.cert_pem) == key
    # a fresh ephemeral key each time
    assert wrap_data_key(root, key, node.public_bytes) != blob


def test_wrong_recipient_or_network_fails(root: NetworkRoot) -> None:
    blob = wrap_data_key(root, DataKey.generate(), ExchangeKey.generate().public_bytes)
    with pytest.raises(KeyUnwrapError, match="another node"):
        unwrap_data_key(blob, ExchangeKey.generate(), root.cert_pem)
    other = create_network(root.name, ["1709"])
    with pytest.raises(KeyUnwrapError, match="another network"):
        unwrap_data_key(blob, ExchangeKey.generate(), other.cert_pem)


@pytest.mark.parametrize("offset", [0, 10, 40, 50, 60, 90, 130, 140, 170, 200, -1])
def test_any_tampered_byte_fails(root: NetworkRoot, offset: int) -> None:
    node = ExchangeKey.generate()
    blob = bytearray(wrap_data_key(root, DataKey.generate(), node.public_bytes))
    blob[offset] ^= 0x01
    with pytest.raises(KeyUnwrapError):
        unwrap_data_key(bytes(blob), node, root.cert_pem)
    with pytest.raises(KeyUnwrapError, match="length"):
        unwrap_data_key(bytes(blob[:-1]), node, root.cert_pem)


def test_wrap_not_signed_by_the_root_fails(root: NetworkRoot) -> None:
    """A stranger can encrypt to a node, but cannot make it adopt the stranger's key."""
    node = ExchangeKey.generate()
    genuine = wrap_data_key(root, DataKey.generate(), node.public_bytes)
    stranger = create_network(root.name, ["1709"]).private_key
    planted = genuine[:-64] + stranger.sign(genuine[:-64])
    with pytest.raises(KeyUnwrapError, match="not signed"):
        unwrap_data_key(planted, node, root.cert_pem)


def test_rotation_shuts_out_a_revoked_node(root: NetworkRoot) -> None:
    nodes = {name: ExchangeKey.generate() for name in ("kantor", "desa", "hilang")}
    old = DataKey.generate()
    old_grants = {name: wrap_data_key(root, old, key.public_bytes) for name, key in nodes.items()}
    assert unwrap_data_key(old_grants["hilang"], nodes["hilang"], root.cert_pem) == old

    new = rotate_data_key(old)
    assert new.epoch == old.epoch + 1
    assert new.key_id != old.key_id and new.secret != old.secret
    remaining = {name: key for name, key in nodes.items() if name != "hilang"}
    new_grants = [wrap_data_key(root, new, key.public_bytes) for key in remaining.values()]
    for key, grant in zip(remaining.values(), new_grants, strict=True):
        assert unwrap_data_key(grant, key, root.cert_pem) == new
    # the revoked node holds the old key and its own exchange key: no grant opens for it
    for grant in new_grants:
        assert old.secret not in grant
        with pytest.raises(KeyUnwrapError):
            unwrap_data_key(grant, nodes["hilang"], root.cert_pem)
    # and rotating twice from the same key gives unrelated keys (nothing is derived)
    assert rotate_data_key(old).secret != new.secret
