"""docs/operations.md followed as a script, with real node processes on loopback: set up the
office node and a village node, enrol the village node on the LAN, see them sync, back the
village node up while it runs, lose it and revoke it, restore its backup onto a new device,
enrol that, and see it sync everything back (including what the backup missed) without
ever forking the old node's feed.

Each step names the section of docs/operations.md it follows; change both together."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from conftest import NodeProcess, generate, simpul_cli, start_node_process
from test_lan_sync import SYNC_PERIOD, Client, eventually
from test_network_cli import PASSPHRASE, request_on_lan, status

BACKUP_PASSPHRASE = "cadangan desa sukamaju aman\n"


def ok(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    result = simpul_cli(data_dir, *args, stdin=stdin)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def token_for(data_dir: Path, name: str) -> str:
    """## People: operators and tokens"""
    ok(data_dir, "operator", "add", name, "--role", "admin", "--password-stdin",
       stdin="kata-sandi-rahasia\n")  # fmt: skip
    return ok(data_dir, "token", "create", name).strip()


async def enrol_on_lan(admin: Path, device: Path, admin_url: str, name: str) -> None:
    """## Enrol a device (on the LAN)"""
    joining, code = await request_on_lan(device, admin_url, name)
    assert name in ok(admin, "network", "pending")
    ok(admin, "network", "admit", "--code", code, "--scope", "1709", "--passphrase-stdin",
       stdin=PASSPHRASE)  # fmt: skip
    _, err = await asyncio.wait_for(joining.communicate(), timeout=60)
    assert joining.returncode == 0, err


async def start(data_dir: Path, node_processes: list[NodeProcess]) -> NodeProcess:
    node = await start_node_process(data_dir, "--sync-period", SYNC_PERIOD)
    node_processes.append(node)
    assert node.sync_port
    return node


def peer_each_other(a: Path, a_node: NodeProcess, b: Path, b_node: NodeProcess) -> None:
    """## Sync on the office network (WiFi without multicast: `simpul peer add`)"""
    ok(a, "peer", "add", f"127.0.0.1:{b_node.sync_port}")
    ok(b, "peer", "add", f"127.0.0.1:{a_node.sync_port}")


def feed_lengths(data_dir: Path) -> dict[str, int]:
    return json.loads(ok(data_dir, "status", "--json"))["frontier"]


async def test_the_operations_guide_from_install_to_restore(
    tmp_path: Path, node_processes: list[NodeProcess], households_jsonl: list
) -> None:
    office, desa, new_desa = tmp_path / "office", tmp_path / "desa", tmp_path / "desa-baru"
    ours = [h for h in households_jsonl if h["kode_wilayah"].startswith("1709")]

    # ## Install / ## Create the office network: the admin's node, its network, its page
    office_token = token_for(office, "ani")
    ok(office, "network", "create", "--name", "Dinsos Bengkulu Tengah", "--scope", "1709",
       "--passphrase-stdin", stdin=PASSPHRASE)  # fmt: skip
    office_node = await start(office, node_processes)

    # ## Enrol a device: the village node asks on the LAN, the admin types its code
    await enrol_on_lan(office, desa, office_node.url, "desa-sukamaju")
    desa_id = status(desa)["node_id"]
    assert status(desa)["network_id"] == status(office)["network_id"]
    csv_file = tmp_path / "data-desa.csv"
    csv_file.write_text(generate(30, "csv", seed=7))
    ok(desa, "import", str(csv_file))  # ## Import the office's spreadsheet
    held = status(desa)["records"] + 3  # and three the office types in
    desa_node = await start(desa, node_processes)
    peer_each_other(office, office_node, desa, desa_node)

    async with aiohttp.ClientSession() as http:
        on_office = Client(http, office_node, office_token)
        for household in ours[:3]:
            await on_office.call("POST", "/api/v1/records", json=household)

        async def office_and_desa_agree() -> bool:
            return status(office)["records"] == status(desa)["records"] == held

        await eventually(office_and_desa_agree, "office and village hold each other's records")

        # ## Backup, restore: a backup of the running village node
        backup_file = tmp_path / "usb" / "desa.simpul-backup"
        backup_file.parent.mkdir()
        ok(desa, "backup", str(backup_file), "--passphrase-stdin", stdin=BACKUP_PASSPHRASE)
        desa_token = token_for(desa, "budi")
        on_desa = Client(http, desa_node, desa_token)
        late = ours[3]  # made after the backup: only the peers have it
        await on_desa.call("POST", "/api/v1/records", json=late)

        async def office_has_late() -> bool:
            return status(office)["records"] == held + 1

        await eventually(office_has_late, "the office holds the village's last record")
        desa_feed = feed_lengths(office)[desa_id]

        # the village laptop is lost: ## Revoke a lost or stolen device
        desa_node.kill()
        await desa_node.process.wait()
        ok(office, "network", "revoke", desa_id, "--reason", "laptop hilang",
           "--passphrase-stdin", stdin=PASSPHRASE)  # fmt: skip

        # ## Backup, restore: the backup onto a new device, which is enrolled as a new node
        restored = ok(new_desa, "restore", str(backup_file), "--passphrase-stdin",
                      stdin=BACKUP_PASSPHRASE)  # fmt: skip
        new_id = status(new_desa)["node_id"]
        assert new_id != desa_id and "simpul enroll request" in restored
        assert status(new_desa)["records"] == held  # as at the backup
        await enrol_on_lan(office, new_desa, office_node.url, "desa-sukamaju-2")
        new_node = await start(new_desa, node_processes)
        peer_each_other(office, office_node, new_desa, new_node)
        on_new = Client(http, new_node, token_for(new_desa, "citra"))
        await on_new.call("POST", "/api/v1/records", json=ours[4])

        async def caught_up() -> bool:
            return status(new_desa)["records"] == status(office)["records"] == held + 2

        await eventually(caught_up, "the restored node and the office hold every record")
        assert (await on_new.call("GET", f"/api/v1/records/{late['id']}"))["id"] == late["id"]
        assert await on_new.heads() == await on_office.heads()
        metrics = await (await http.get(office_node.url + "/metrics")).text()

    # the old node's feed was never forked: the same length everywhere, and a new one started
    for holder in (office, new_desa):
        assert feed_lengths(holder)[desa_id] == desa_feed
        assert feed_lengths(holder)[new_id] >= 1
    peers = json.loads(ok(office, "peers", "--json"))
    assert all(not (p["last_error"] or "").startswith("the feed of node") for p in peers)
    assert 'simpul_sync_sessions_total{carrier="lan",side="client",outcome="ok"}' in metrics
    assert 'simpul_sync_bytes_total{carrier="lan",direction="in"}' in metrics
    assert "simpul_sync_refusals_total{" not in metrics  # nothing refused, nothing forked
    # the lost laptop comes back on (a thief?): the office refuses the revoked node
    thief = await start(desa, node_processes)
    ok(desa, "peer", "add", f"127.0.0.1:{office_node.sync_port}")

    async def refused() -> bool:  # in the TLS handshake: TLS 1.3 shows it as a hang-up
        rows = json.loads(ok(desa, "peers", "--json"))
        return any("Server disconnected" in (p["last_error"] or "") for p in rows)

    await eventually(refused, "the office refuses the revoked node")
    thief.kill()
    # ## Check a node
    doctor = simpul_cli(new_desa, "doctor")
    assert doctor.returncode == 0, doctor.stdout
    ok(new_desa, "verify")
