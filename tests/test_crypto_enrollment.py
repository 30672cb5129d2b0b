"""Enrollment by file: signed request, pairing code, admission, and the grant round trip."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from simpul.crypto.data_key import DataKey
from simpul.crypto.enrollment import (
    EnrollmentError,
    EnrollmentRequest,
    Grant,
    admit,
    pairing_code,
)
from simpul.crypto.exchange_key import ExchangeKey
from simpul.crypto.network_root import NetworkRoot, create_network
from simpul.crypto.node_key import NodeKey
from simpul.crypto.revocation import (
    RevocationList,
    empty_revocation_list,
    issue_revocation_list,
)

NOW = datetime(2025, 7, 1, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def root() -> NetworkRoot:
    return create_network("Dinsos Bengkulu Selatan", ["1701"], now=NOW - timedelta(days=1))


@pytest.fixture(scope="module")
def revocations(root: NetworkRoot) -> RevocationList:
    return empty_revocation_list(root, now=NOW)


@pytest.fixture
def device() -> tuple[NodeKey, ExchangeKey]:
    return NodeKey.generate(), ExchangeKey.generate()


def _request(device: tuple[NodeKey, ExchangeKey], name: str = "Laptop Desa") -> EnrollmentRequest:
    return EnrollmentRequest.create(*device, name, now=NOW)


def _edit(data: bytes, **changes: object) -> bytes:
    document = json.loads(data)
    document.update(changes)
    return json.dumps(document).encode()


def test_request_round_trip(device: tuple[NodeKey, ExchangeKey]) -> None:
    request = _request(device)
    assert request.node_id == device[0].node_id_hex
    data = request.to_bytes()
    assert EnrollmentRequest.from_bytes(data) == request
    document = json.loads(data)
    assert document["type"] == "simpul-enrollment-request"
    assert document["created_at"] == "2025-07-01T09:30:00Z"


def test_tampered_request_is_detected(device: tuple[NodeKey, ExchangeKey]) -> None:
    data = _request(device).to_bytes()
    impostor_exchange = ExchangeKey.generate().public_bytes
    for changes in (
        {"name": "Laptop Lain"},
        {"exchange_public_key": base64.b64encode(impostor_exchange).decode()},
        {"created_at": "2025-07-01T09:30:01Z"},
    ):
        with pytest.raises(EnrollmentError, match="signature"):
            EnrollmentRequest.from_bytes(_edit(data, **changes))
    for bad in (
        b"not json",
        _edit(data, type="something-else"),
        _edit(data, version=2),
        _edit(data, extra="field"),
        _edit(data, signature="***"),
        _edit(data, name=7),
        _edit(data, created_at="yesterday"),
        b"[]",
    ):
        with pytest.raises(EnrollmentError):
            EnrollmentRequest.from_bytes(bad)


def test_pairing_code_is_shared_and_specific(device: tuple[NodeKey, ExchangeKey]) -> None:
    request = _request(device)
    on_device = pairing_code(request)
    on_admin_laptop = pairing_code(EnrollmentRequest.from_bytes(request.to_bytes()))
    assert on_device == on_admin_laptop
    assert len(on_device) == 6 and on_device.isdigit()
    other = _request((NodeKey.generate(), ExchangeKey.generate()))
    assert pairing_code(other) != on_device


def test_admit_and_accept_grant(
    root: NetworkRoot, revocations: RevocationList, device: tuple[NodeKey, ExchangeKey]
) -> None:
    node_key, exchange_key = device
    request = EnrollmentRequest.from_bytes(_request(device).to_bytes())
    data_key = DataKey.generate()
    grant = admit(
        root,
        request,
        code=f" {pairing_code(request)} ",
        role="office",
        scope=["1701052001"],
        data_key=data_key,
        revocations=revocations,
        name="Kantor Desa Tanjung",
        now=NOW,
    )
    received = Grant.from_bytes(grant.to_bytes())
    assert received.network_id == root.network_id
    certificate, key = received.accept(
        node_key, exchange_key, now=NOW, expected_network_id=root.network_id
    )
    assert key == data_key
    assert certificate.node_id == node_key.node_id_hex
    assert certificate.name == "Kantor Desa Tanjung"
    assert (certificate.role, certificate.scope) == ("office", ("1701052001",))
    assert received.revocations.number == revocations.number

    # the requested name is used when the admin gives none
    default_named = admit(
        root,
        request,
        code=pairing_code(request),
        role="hub",
        scope=["1701"],
        data_key=data_key,
        revocations=revocations,
        now=NOW,
    )
    assert default_named.accept(node_key, exchange_key, now=NOW)[0].name == "Laptop Desa"


def test_admit_refuses_wrong_code_and_revoked_nodes(
    root: NetworkRoot, revocations: RevocationList, device: tuple[NodeKey, ExchangeKey]
) -> None:
    request = _request(device)
    code = pairing_code(request)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    common = {"role": "office", "scope": ["1701"], "data_key": DataKey.generate(), "now": NOW}
    with pytest.raises(EnrollmentError, match="pairing code"):
        admit(root, request, code=wrong, revocations=revocations, **common)  # type: ignore[arg-type]
    revoked = issue_revocation_list(root, revocations, request.node_id, "hilang", now=NOW)
    with pytest.raises(EnrollmentError, match="revoked"):
        admit(root, request, code=code, revocations=revoked, **common)  # type: ignore[arg-type]
    foreign = empty_revocation_list(create_network("Lain", ["1701"]), now=NOW)
    with pytest.raises(EnrollmentError, match="another network"):
        admit(root, request, code=code, revocations=foreign, **common)  # type: ignore[arg-type]


def test_grant_is_only_for_its_device_and_network(
    root: NetworkRoot, revocations: RevocationList, device: tuple[NodeKey, ExchangeKey]
) -> None:
    request = _request(device)
    grant = admit(
        root,
        request,
        code=pairing_code(request),
        role="office",
        scope=["1701"],
        data_key=DataKey.generate(),
        revocations=revocations,
        now=NOW,
    )
    node_key, exchange_key = device
    with pytest.raises(EnrollmentError, match="another node's key"):
        grant.accept(NodeKey.generate(), exchange_key, now=NOW)
    with pytest.raises(EnrollmentError, match="addressed to another node"):
        grant.accept(node_key, ExchangeKey.generate(), now=NOW)
    with pytest.raises(EnrollmentError, match="expected"):
        grant.accept(node_key, exchange_key, now=NOW, expected_network_id="00" * 32)

    other = create_network(root.name, ["1701"], now=NOW - timedelta(days=1))
    swapped = Grant.from_bytes(_edit(grant.to_bytes(), root_certificate=other.cert_pem.decode()))
    with pytest.raises(EnrollmentError, match="grant rejected"):
        swapped.accept(node_key, exchange_key, now=NOW)

    for bad in (b"{}", _edit(grant.to_bytes(), revocations="x"), b"\xff"):
        with pytest.raises(EnrollmentError):
            Grant.from_bytes(bad)
