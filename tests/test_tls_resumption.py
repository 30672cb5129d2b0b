"""TLS 1.3 session resumption and refused handshakes, over real sockets on 127.0.0.1.

A client context offers the session of its last connection; the server resumes it; the
peer's certificate still reaches `check_peer`, so a node revoked after its ticket was
issued is refused on the resumed connection. A server context reports every refused
handshake (no certificate, a foreign one, a revoked one) and not a client that just left.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from test_crypto_tls import _bare_client, _member

from simpul.crypto.network_root import NetworkRoot, create_network
from simpul.crypto.node_certificate import CertificateRejected, RejectReason
from simpul.crypto.revocation import RevocationList, empty_revocation_list, issue_revocation_list
from simpul.crypto.tls import check_peer, client_context, server_context

TIMEOUT = 10


@pytest.fixture(scope="module")
def root() -> NetworkRoot:
    return create_network("Dinsos Kaur", ["1709"])


@pytest.fixture(scope="module")
def clean(root: NetworkRoot) -> RevocationList:
    return empty_revocation_list(root)


@dataclass
class Server:
    """A mutual-TLS server that runs `check_peer` against `revocations` (changeable)."""

    root: NetworkRoot
    revocations: RevocationList
    port: int = 0
    seen: list[tuple[bool, str | RejectReason]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        try:
            peer = check_peer(ssl_object, self.root.cert_pem, self.revocations)
        except CertificateRejected as exc:
            self.seen.append((ssl_object.session_reused, exc.reason))
        else:
            self.seen.append((ssl_object.session_reused, peer.node_id))
            writer.write(b"OK")
            await writer.drain()
        writer.close()


@pytest.fixture
async def server(root: NetworkRoot, clean: RevocationList) -> AsyncIterator[Server]:
    hub = _member(root, "Hub Kabupaten")
    running = Server(root, clean)
    context = server_context(
        hub.key, hub.cert_pem, root.cert_pem, clean,
        on_refused=lambda _, reason, detail: running.refused.append((reason, detail)),
    )  # fmt: skip
    listening = await asyncio.start_server(running.handle, "127.0.0.1", 0, ssl=context)
    running.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield running


async def _connect(
    server: Server, client: ssl.SSLContext, host: str = "127.0.0.1"
) -> tuple[bool, bytes]:
    """(the client resumed, what the server answered) for one connection."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(host, server.port, ssl=client)
        resumed = writer.get_extra_info("ssl_object").session_reused
        try:
            answer = await reader.read()
        except (ssl.SSLError, ConnectionError):
            answer = b""
        writer.close()
        return resumed, answer


async def test_second_connection_resumes_and_the_server_still_sees_the_certificate(
    root: NetworkRoot, clean: RevocationList, server: Server
) -> None:
    office = _member(root, "Kantor Desa")
    client = office.client(clean)
    assert await _connect(server, client) == (False, b"OK")
    assert await _connect(server, client) == (True, b"OK")
    assert server.seen == [(False, office.node_id), (True, office.node_id)]


async def test_client_resumed_still_verifies_the_server(
    root: NetworkRoot, clean: RevocationList, server: Server
) -> None:
    client = _member(root, "Kantor Desa").client(clean)
    for _ in range(2):
        async with asyncio.timeout(TIMEOUT):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client)
            ssl_object = writer.get_extra_info("ssl_object")
            peer = check_peer(ssl_object, root.cert_pem, clean)
            assert peer.name == "Hub Kabupaten"
            writer.close()
    assert ssl_object.session_reused


async def test_node_revoked_after_its_ticket_is_refused_on_the_resumed_connection(
    root: NetworkRoot, clean: RevocationList, server: Server
) -> None:
    lost = _member(root, "Laptop Hilang")
    client = lost.client(clean)
    assert await _connect(server, client) == (False, b"OK")
    server.revocations = issue_revocation_list(root, clean, lost.node_id, "laptop hilang")
    assert await _connect(server, client) == (True, b"")
    assert server.seen[-1] == (True, RejectReason.REVOKED)


async def test_sessions_are_kept_per_server(root: NetworkRoot, clean: RevocationList) -> None:
    office = _member(root, "Kantor Desa")
    client = office.client(clean)
    servers = []
    for host in ("127.0.0.1", "127.0.0.2"):  # two peers' addresses
        peer = _member(root, f"Desa {host}")
        running = Server(root, clean)
        context = server_context(peer.key, peer.cert_pem, root.cert_pem, clean)
        listening = await asyncio.start_server(running.handle, host, 0, ssl=context)
        running.port = listening.sockets[0].getsockname()[1]
        servers.append((host, running, listening))
    try:
        for host, running, _ in servers:
            assert await _connect(running, client, host) == (False, b"OK")
        for host, running, _ in servers:  # each address resumes its own session
            assert await _connect(running, client, host) == (True, b"OK")
    finally:
        for _, _, listening in servers:
            listening.close()
            await listening.wait_closed()


async def test_refused_handshakes_are_reported_with_a_reason(
    root: NetworkRoot, clean: RevocationList, server: Server
) -> None:
    assert (await _connect(server, _bare_client(root.cert_pem)))[1] == b""
    stranger_root = create_network("Dinsos Lain", ["1709"])
    stranger = _member(stranger_root, "Orang Asing")
    foreign = client_context(stranger.key, stranger.cert_pem, root.cert_pem, None)
    assert (await _connect(server, foreign))[1] == b""
    reasons = [reason for reason, _ in server.refused]
    assert reasons == ["no-certificate", "untrusted-certificate"], server.refused
    assert all(detail for _, detail in server.refused)
    assert server.seen == []  # no refused client got as far as the peer check


async def test_revoked_in_the_handshake_is_reported_as_revoked(
    root: NetworkRoot, clean: RevocationList
) -> None:
    hub, lost = _member(root, "Hub"), _member(root, "Laptop Hilang")
    revoked = issue_revocation_list(root, clean, lost.node_id, "laptop hilang")
    refused: list[str] = []
    context = server_context(
        hub.key, hub.cert_pem, root.cert_pem, revoked,
        on_refused=lambda _, reason, detail: refused.append(reason),
    )  # fmt: skip
    running = Server(root, revoked)
    listening = await asyncio.start_server(running.handle, "127.0.0.1", 0, ssl=context)
    running.port = listening.sockets[0].getsockname()[1]
    async with listening:
        assert (await _connect(running, lost.client(clean)))[1] == b""
    assert refused == ["revoked"]


async def test_a_client_that_leaves_before_tls_is_not_a_refusal(
    root: NetworkRoot, server: Server
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)  # the uplink's probe
    writer.close()
    await writer.wait_closed()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"\x16\x03\x01")  # the start of a ClientHello, then gone
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    # a refusal after them: once the client sees it, the server has handled all three
    assert (await _connect(server, _bare_client(root.cert_pem)))[1] == b""
    assert [reason for reason, _ in server.refused] == ["no-certificate"]
