"""Network news is verified before it is kept (issue 19): junk wrapped keys on a drive are
neither stored nor passed on over LAN, and offers that are too large, nested too deeply,
signed by another root or carrying relabelled wraps change nothing."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

from conftest import NodeProcess, simpul_cli, start_node_process
from enrolled_dirs import Networks
from test_lan_sync import SYNC_PERIOD, data_key_epochs, eventually, revocation_number
from test_network_cli import PASSPHRASE
from usb_nodes import usb_sync

from simpul.crypto.data_key import WRAPPED_KEY_BYTES
from simpul.node import network_gossip
from simpul.node.membership import load_membership
from simpul.node.network_gossip import NewsDesk

JUNK = 2_000
LOST = "ab" * 16  # a node id the admin revokes (a laptop that was never enrolled here)


def wraps(data_dir: Path) -> dict[str, bytes]:
    folder = data_dir / "network" / "wraps"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def revoked_network(tmp_path: Path, networks: Networks) -> tuple[Path, Path, Path]:
    """Copies of the admin and two villages; the admin has revoked LOST (list 1, data key
    epoch 2 wrapped to each of the three)."""
    admin, desa1, desa2 = (
        shutil.copytree(template, tmp_path / name)
        for template, name in zip(networks.office, ("admin", "desa1", "desa2"), strict=True)
    )
    done = simpul_cli(
        admin, "network", "revoke", LOST, "--reason", "laptop hilang", "--passphrase-stdin",
        stdin=PASSPHRASE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(wraps(admin)) == 3
    return admin, desa1, desa2


def junk_wraps(real: bytes) -> dict[str, str]:
    """JUNK wraps under valid names: random blobs, a real wrap copied under false names,
    and 4 KiB blobs (as in the probe)."""
    junk = {}
    for index in range(JUNK):
        kind = index % 3
        blob = (
            os.urandom(WRAPPED_KEY_BYTES) if kind == 0 else real if kind == 1 else os.urandom(4096)
        )
        junk[f"2-{os.urandom(16).hex()}.key"] = base64.b64encode(blob).decode()
    return junk


async def test_junk_wraps_on_a_drive_are_not_stored_nor_passed_on_over_lan(
    tmp_path: Path, networks: Networks, node_processes: list[NodeProcess]
) -> None:
    admin, desa1, desa2 = revoked_network(tmp_path, networks)
    drive = tmp_path / "flashdisk"
    drive.mkdir()
    usb_sync(admin, drive)  # the admin's news: the new list and the three wraps
    (news_path,) = drive.glob("SIMPUL/*/network.json")
    news = json.loads(news_path.read_bytes())
    real = base64.b64decode(next(iter(news["wraps"].values())))
    news["wraps"] |= junk_wraps(real)
    news_path.write_text(json.dumps(news))
    assert news_path.stat().st_size > 3 * 1024 * 1024

    report = usb_sync(desa1, drive)
    assert sorted(wraps(desa1)) == sorted(wraps(admin))  # the three real ones, nothing else
    assert wraps(desa1) == wraps(admin)
    (line,) = [f for f in report["files"] if f["name"].endswith("network.json")]
    assert line["status"] == "refused" and f"{JUNK} wrapped keys refused" in line["detail"]
    assert revocation_number(desa1) == 1 and data_key_epochs(desa1) == {1, 2}
    assert news_path.stat().st_size < 10 * 1024  # the drive now carries clean news

    one, two = [await start_node_process(d, "--sync-period", SYNC_PERIOD) for d in (desa1, desa2)]
    node_processes += [one, two]
    simpul_cli(desa1, "peer", "add", f"127.0.0.1:{two.sync_port}")
    simpul_cli(desa2, "peer", "add", f"127.0.0.1:{one.sync_port}")

    async def learnt() -> bool:
        return revocation_number(desa2) == 1 and data_key_epochs(desa2) == {1, 2}

    await eventually(learnt, "the second village learnt the news from the first over LAN")
    assert sorted(wraps(desa2)) == sorted(wraps(admin)) and wraps(desa2) == wraps(admin)
    for node in (desa1, desa2):
        assert simpul_cli(node, "verify").returncode == 0


def offer(revocations: bytes, wrapped: dict[str, bytes | str]) -> bytes:
    return json.dumps(
        {
            "revocations": revocations.decode(),
            "wraps": {
                n: b if isinstance(b, str) else base64.b64encode(b).decode()
                for n, b in wrapped.items()
            },
        }
    ).encode()


def test_offers_that_are_too_large_nested_foreign_or_relabelled_change_nothing(
    tmp_path: Path, networks: Networks
) -> None:
    admin, _, desa2 = revoked_network(tmp_path, networks)
    membership = load_membership(desa2)
    assert membership is not None
    desk = NewsDesk(desa2, membership)
    before = desk.version()
    assert before == "0.0"
    list_pem = (admin / "network" / "revocations.crl.pem").read_bytes()
    held = wraps(admin)
    name, blob = next(iter(held.items()))
    foreign_list = (networks.foreign / "network" / "revocations.crl.pem").read_bytes()
    relabelled = {f"3-{name.split('-')[1]}", f"2-{'cd' * 16}.key"}  # wrong epoch; a copy
    too_many_bytes = b" " * (network_gossip.MAX_NEWS_BYTES + 1)

    for bad in (
        too_many_bytes,
        b"[" * 200_000,
        offer(foreign_list, {}),
        offer(list_pem.replace(b"A", b"B", 1), {}),
        b'{"revocations": 1, "wraps": {}}',
        offer(
            membership.revocations.to_pem(), {n: os.urandom(WRAPPED_KEY_BYTES) for n in relabelled}
        ),
    ):
        assert not desk.take(bad)
    assert desk.version() == before and wraps(desa2) == {}

    assert desk.take(offer(list_pem, held))  # the real news is taken whole
    assert desk.version() == "1.3" and wraps(desa2) == held
    assert data_key_epochs(desa2) == {1, 2}
    assert not desk.take(offer(list_pem, {n: blob for n in relabelled}))
    assert desk.version() == "1.3" and wraps(desa2) == held
