"""House photos to the district hub: after the records, thumbnails only unless the admin
enables full photos, inside the uplink's byte budget; with full photos, an upload cut by
the budget resumes later without resending a photo the hub already holds."""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from pathlib import Path

from conftest import NodeProcess, start_node_process
from hub_processes import admit_hub, hub_status, start_hub, uplink_of
from test_lan_sync import eventually
from test_network_cli import create_network
from test_photo_usb import village_with_photos

PHOTOS = 3


def hub_photo_files(hub_dir: Path) -> set[str]:
    return {p.name for p in hub_dir.rglob("photos/*/*") if p.is_file()}


def received_at_hub(log: Path) -> Counter[str]:
    """How many times the hub stored each photo file (its log, one line per PUT taken)."""
    return Counter(re.findall(r"photo received remote=\S+ digest=([0-9a-f]{64})", log.read_text()))


async def test_thumbnails_only_then_full_photos_resume_within_the_budget(
    tmp_path: Path, node_processes: list[NodeProcess]
) -> None:
    office, hub_dir = tmp_path / "office", tmp_path / "hub"
    create_network(office)
    refs = await village_with_photos(office, PHOTOS)
    thumbs = {r["kecil"] for r in refs}
    full = {r["hash"] for r in refs}
    admit_hub(office, hub_dir, tmp_path)
    log = tmp_path / "hub.log"
    hub = await start_hub(hub_dir, "127.0.0.1:0", "127.0.0.1:0", log)
    try:
        hub_url = f"https://127.0.0.1:{hub.port}"
        node = await start_node_process(
            office, "--hub", hub_url, "--uplink-budget", "50M", "--hub-period", "2"
        )
        node_processes.append(node)

        async def thumbnails_up() -> bool:
            return hub_photo_files(hub_dir) == thumbs

        await eventually(thumbnails_up, "the hub holds every thumbnail")
        assert (await hub_status(hub.status_port))["records"] == PHOTOS
        node.process.send_signal(signal.SIGTERM)
        await node.process.wait()
        assert hub_photo_files(hub_dir) == thumbs  # no full photo without the admin's word

        spent = uplink_of(office)["bytes_today"]
        budget = f"{spent + 500 * 1024}/1G"  # room for one or two full photos, not three
        node = await start_node_process(
            office, "--hub-full-photos", "--uplink-budget", budget, "--hub-period", "2"
        )
        node_processes.append(node)

        async def stopped() -> bool:
            return uplink_of(office)["state"] == "budget"

        await eventually(stopped, "the uplink stops at its budget")
        partly = hub_photo_files(hub_dir) - thumbs
        assert partly and partly < full  # some full photos went up, not all
        node.process.send_signal(signal.SIGTERM)
        await node.process.wait()

        node = await start_node_process(office, "--uplink-budget", "50M", "--hub-period", "2")
        node_processes.append(node)  # --hub-full-photos was kept in the data dir

        async def everything_up() -> bool:
            return hub_photo_files(hub_dir) == thumbs | full

        await eventually(everything_up, "every full photo reaches the hub once the budget allows")
        assert set(received_at_hub(log).values()) == {1}  # none sent twice
    finally:
        hub.process.kill()
        await asyncio.wait_for(hub.process.wait(), timeout=30)
