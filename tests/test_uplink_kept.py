"""Fewer bytes a round: the uplink keeps its connection to the hub across rounds and
resumes the TLS session on a new one, without weakening the peer check.

A real hub on loopback mutual TLS (tests/test_hub.py's `running_hub`); rounds are the
uplink's own (`hub_round` on a `HubLink`), bytes counted at the socket by its `Meter`.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from certified_peers import Network
from sync_peers import Peer
from test_hub import RunningHub, dial, hub_status
from test_hub import hub as hub  # the fixture

from simpul.crypto.revocation import issue_revocation_list
from simpul.node.sync_session import NEWS, Dial, SessionError
from simpul.node.uplink_session import HubLink, HubRound, Meter, hub_round

NOOP_KEPT_BYTES = 1024  # the issue's targets for a kept or resumed connection
EDIT_KEPT_BYTES = 2048


async def _round(peer: Peer, link: HubLink) -> tuple[HubRound, int]:
    """One round on `link`; what it did and the bytes it put on the socket."""
    before = link.meter.total
    done = await hub_round(peer.engine, link.dial, link.meter, link=link)
    return done, link.meter.total - before


async def _office(network: Network, households_jsonl: list) -> tuple[Peer, dict]:
    """An office node holding five households; and one of them."""
    office = await network.node(["1709"])
    made = [
        await office.records.create(household, "ani")
        for household in [h for h in households_jsonl if h["kode_wilayah"].startswith("1709")][:5]
    ]
    return office, made[0]


async def test_rounds_keep_the_connection_then_resume_and_cost_less(
    tmp_path: Path, network: Network, hub: RunningHub, households_jsonl: list
) -> None:
    office, record = await _office(network, households_jsonl)
    target = dial(network, office, hub, tmp_path)
    async with HubLink(target, Meter()) as link:
        first, first_bytes = await _round(office, link)
        assert first.connection == "new" and first.report.sent > 0
        noop, noop_bytes = await _round(office, link)
        assert noop.connection == "kept" and noop.report.sent == 0
        desil = 1 if record.get("desil") != 1 else 2  # one field, changed
        await office.records.update(record["id"], lambda h: {**h, "desil": desil}, "ani")
        edit, edit_bytes = await _round(office, link)
        assert edit.connection == "kept" and edit.report.sent == 1
        await link.close()  # as after a long quiet spell: the next round connects again
        resumed, resumed_bytes = await _round(office, link)
        assert resumed.connection == "resumed" and resumed.report.sent == 0
    # a no-op round on a fresh context (no session to offer): the full handshake's cost
    async with HubLink(dial(network, office, hub, tmp_path), Meter()) as fresh:
        full, full_bytes = await _round(office, fresh)
        assert full.connection == "new"
    assert noop_bytes <= NOOP_KEPT_BYTES, noop_bytes
    assert edit_bytes <= EDIT_KEPT_BYTES, edit_bytes
    assert resumed_bytes < full_bytes - 1500, (resumed_bytes, full_bytes)  # no certificates
    assert noop_bytes < resumed_bytes < first_bytes
    facts = (await hub_status(hub))["networks"][0]
    assert facts["refusals"] == {}


async def test_node_revoked_after_its_ticket_is_refused_on_the_resumed_connection(
    tmp_path: Path, network: Network, hub: RunningHub, households_jsonl: list
) -> None:
    (good, _), lost = await _office(network, households_jsonl), await network.node(["1709"])
    target = dial(network, lost, hub, tmp_path)
    async with HubLink(target, Meter()) as link:
        await _round(lost, link)
    revoked = issue_revocation_list(
        network.root, network.revocations, lost.key.node_id_hex, "laptop hilang"
    )
    await _hand_news(dial(network, good, hub, tmp_path), revoked.to_pem().decode())
    async with HubLink(target, Meter()) as link:  # the same context: it offers the session
        with pytest.raises(SessionError, match="403"):
            await _round(lost, link)
        assert link.last_tls is not None and link.last_tls.session_reused
    facts = (await hub_status(hub))["networks"][0]
    assert facts["refusals"] == {"revoked": 1}


async def _hand_news(target: Dial, revocations_pem: str) -> None:
    """What an uplink does with a newer revocation list: hand it to the hub."""
    news = json.dumps({"revocations": revocations_pem, "wraps": {}}).encode()
    connector = aiohttp.TCPConnector(ssl=target.context)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(target.base_url + NEWS, data=news, **target.options()) as answer,  # type: ignore[arg-type]
    ):
        assert (await answer.json())["taken"] is True
