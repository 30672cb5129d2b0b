"""Automatic USB sync: a running `simpul node` finds a drive under its mount roots, syncs
it without a terminal and says "selesai, aman dicabut" in its status; an empty drive is
offered and synced once the operator chooses "use this drive"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from conftest import Api, NodeProcess, make_token, simpul_cli, start_node_process
from test_lan_sync import eventually
from usb_nodes import (
    drive_files,
    import_households,
    small_drive,
    usb_sync,
)


async def usb_state(api: Api) -> dict:
    status, facts = await api.call("GET", "/api/v1/status")
    assert status == 200, facts
    return facts["usb"] or {}


async def test_node_syncs_a_plugged_drive_and_an_empty_one_the_operator_chooses(
    tmp_path: Path,
    office_village: tuple[Path, Path],
    node_processes: list[NodeProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    office, village = office_village
    import_households(village, 30)
    media = tmp_path / "media"
    media.mkdir()
    monkeypatch.setenv("SIMPUL_USB_ROOTS", str(media))
    monkeypatch.setenv("SIMPUL_USB_POLL", "0.2")
    token = await make_token(village)
    node = await start_node_process(village)
    node_processes.append(node)
    async with aiohttp.ClientSession() as session:
        api = Api(session, node.url, token)

        # a courier's drive that already carries a SIMPUL folder is synced by itself
        courier = media / "courier" / "FLASHDISK"
        (courier / "SIMPUL").mkdir(parents=True)

        async def done(drive: Path) -> bool:
            state = await usb_state(api)
            return state.get("drive") == str(drive) and state.get("state") == "selesai"

        await eventually(lambda: done(courier), "the plugged drive was synced")
        assert (await usb_state(api))["message"] == "selesai, aman dicabut"
        assert any(name.endswith(".simpul") for name in drive_files(courier))
        at_office = usb_sync(office, courier)
        assert at_office["imported"] > 0 and at_office["problems"] == 0
        shown = simpul_cli(village, "status")
        assert f"usb: {courier}: selesai, aman dicabut" in shown.stdout
        metrics = await (await session.get(node.url + "/metrics")).text()
        assert 'simpul_sync_sessions_total{carrier="usb",side="client",outcome="ok"} 1' in metrics

        # an empty drive waits for the operator; a path outside the mount roots is refused
        empty = media / "KOSONG"
        empty.mkdir()
        await asyncio.sleep(0.6)  # three looks of the watcher
        assert not (empty / "SIMPUL").exists()
        status, body = await api.call("POST", "/api/v1/usb/use", json={"path": str(tmp_path)})
        assert status == 422 and "not a drive folder" in body["error"]
        verifier = Api(session, node.url, await make_token(village, "verif", "verifier"))
        status, body = await verifier.call("POST", "/api/v1/usb/use", json={"path": str(empty)})
        assert status == 403 and not (empty / "SIMPUL").exists()
        status, body = await api.call("POST", "/api/v1/usb/use", json={"path": str(empty)})
        assert status == 202, body
        await eventually(lambda: done(empty), "the chosen drive was synced")
        assert any(name.endswith(".simpul") for name in drive_files(empty))

        # a real mount point without a SIMPUL folder is offered as an empty drive
        with small_drive(media / "sdb1", "1m") as mounted:
            state = await usb_state(api)
            assert str(mounted) in state["empty_drives"]
