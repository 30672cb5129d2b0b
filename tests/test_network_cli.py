"""Networks from the command line: create, enrol by file and on the LAN, revoke, move the root."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from conftest import NodeProcess, generate, simpul_cli, start_node_process

from simpul.crypto.node_certificate import NodeCertificate
from simpul.crypto.node_key import NodeKey

if TYPE_CHECKING:  # enrolled_dirs makes its data dirs with this module's helpers
    from enrolled_dirs import Networks

PASSPHRASE = "kata sandi yang panjang\n"


def status(data_dir: Path) -> dict:
    result = simpul_cli(data_dir, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def create_network(data_dir: Path) -> dict:
    result = simpul_cli(
        data_dir, "network", "create", "--name", "Dinsos Uji", "--scope", "1709",
        "--passphrase-stdin", stdin=PASSPHRASE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return status(data_dir)


def enrol_by_file(admin: Path, device: Path, tmp: Path, scope: str = "1709") -> dict:
    request, grant = tmp / f"{device.name}.req", tmp / f"{device.name}.grant"
    made = simpul_cli(device, "enroll", "request", "--out", str(request), "--name", device.name)
    assert made.returncode == 0, made.stderr
    admitted = simpul_cli(
        admin, "network", "admit", str(request), "--scope", scope, "--out", str(grant),
        "--passphrase-stdin", stdin=PASSPHRASE,
    )  # fmt: skip
    assert admitted.returncode == 0, admitted.stderr
    installed = simpul_cli(device, "enroll", "install", str(grant))
    assert installed.returncode == 0, installed.stderr
    return status(device)


def test_create_network_shows_identity_and_keeps_keys_private(tmp_path: Path) -> None:
    admin = tmp_path / "admin"
    facts = create_network(admin)
    assert len(facts["network_id"]) == 64
    assert (facts["role"], facts["scope"]) == ("office", ["1709"])
    assert facts["expires"] > "2027"
    for secret in ("node.key", "exchange.key", "network/root.key", "network/data-keys.json"):
        assert stat.S_IMODE((admin / secret).stat().st_mode) == 0o600, secret
    root_file = (admin / "network/root.key").read_text()
    assert "ENCRYPTED ROOT KEY" in root_file and "PRIVATE KEY" not in root_file
    again = simpul_cli(
        admin, "network", "create", "--name", "x", "--scope", "17", "--passphrase-stdin",
        stdin=PASSPHRASE,
    )  # fmt: skip
    assert again.returncode != 0 and "already belongs" in again.stderr


def test_enrol_by_file_keeps_existing_records_verifiable(tmp_path: Path) -> None:
    admin, device = tmp_path / "admin", tmp_path / "desa"
    network_id = create_network(admin)["network_id"]
    csv_file = tmp_path / "h.csv"
    header, *rows = generate(20, "csv").splitlines()
    # the households of kabupaten 1709 only: a node joins with no record outside its scope
    csv_file.write_text("\n".join([header, *(r for r in rows if ",1709" in r[:48])]) + "\n")
    assert simpul_cli(device, "import", str(csv_file)).returncode == 0
    before = status(device)
    assert before["records"] > 0
    joined = enrol_by_file(admin, device, tmp_path, scope="1709")
    assert joined["network_id"] == network_id
    assert joined["node_id"] == before["node_id"]
    assert (joined["scope"], joined["records"]) == (["1709"], before["records"])
    assert simpul_cli(device, "verify").returncode == 0
    certificate = (device / "network/node.cert.pem").read_bytes()
    assert (
        NodeCertificate.parse(certificate).public_key
        == NodeKey.load(device / "node.key").public_bytes
    )


def test_grant_for_another_device_or_network_is_refused(tmp_path: Path) -> None:
    admin, other_admin = tmp_path / "admin", tmp_path / "other"
    create_network(admin)
    create_network(other_admin)
    device, thief = tmp_path / "desa", tmp_path / "thief"
    request, grant = tmp_path / "d.req", tmp_path / "d.grant"
    simpul_cli(device, "enroll", "request", "--out", str(request))
    simpul_cli(
        admin, "network", "admit", str(request), "--scope", "1709", "--out", str(grant),
        "--passphrase-stdin", stdin=PASSPHRASE,
    )  # fmt: skip
    stolen = simpul_cli(thief, "enroll", "install", str(grant))
    assert stolen.returncode != 0 and "another node" in stolen.stderr
    assert "Traceback" not in stolen.stderr
    joined_elsewhere = simpul_cli(other_admin, "enroll", "install", str(grant))
    assert joined_elsewhere.returncode != 0 and "already belongs" in joined_elsewhere.stderr


def test_wrong_passphrase_and_moved_root_key(tmp_path: Path) -> None:
    admin, device = tmp_path / "admin", tmp_path / "desa"
    create_network(admin)
    request = tmp_path / "d.req"
    simpul_cli(device, "enroll", "request", "--out", str(request))
    admit = ["network", "admit", str(request), "--scope", "1709", "--out", str(tmp_path / "g")]
    wrong = simpul_cli(admin, *admit, "--passphrase-stdin", stdin="salah\n")
    assert wrong.returncode != 0 and "passphrase" in wrong.stderr
    safe = tmp_path / "usb" / "root.key"
    safe.parent.mkdir()
    moved = simpul_cli(admin, "network", "export-root", str(safe), "--remove")
    assert moved.returncode == 0
    assert not (admin / "network/root.key").exists()
    gone = simpul_cli(admin, *admit, "--passphrase-stdin", stdin=PASSPHRASE)
    assert gone.returncode != 0 and "import-root" in gone.stderr
    back = simpul_cli(admin, "network", "import-root", str(safe), "--passphrase-stdin",
                      stdin=PASSPHRASE)  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert simpul_cli(admin, *admit, "--passphrase-stdin", stdin=PASSPHRASE).returncode == 0


def test_revoke_rotates_data_key_for_remaining_nodes_only(
    tmp_path: Path, networks: Networks
) -> None:
    template, *enrolled = networks.office  # the admin enrolled two devices by file
    admin = shutil.copytree(template, tmp_path / "admin")
    kept, lost = ({"node_id": NodeKey.load(d / "node.key").node_id_hex} for d in enrolled)
    result = simpul_cli(
        admin, "network", "revoke", lost["node_id"], "--reason", "laptop hilang",
        "--passphrase-stdin", stdin=PASSPHRASE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "#1" in result.stdout
    keys = json.loads((admin / "network/data-keys.json").read_text())
    assert [k["epoch"] for k in keys] == [1, 2]
    wraps = {p.name for p in (admin / "network/wraps").iterdir()}
    assert f"2-{kept['node_id']}.key" in wraps
    assert not any(lost["node_id"] in name for name in wraps)
    twice = simpul_cli(
        admin, "network", "revoke", lost["node_id"], "--reason", "lagi", "--passphrase-stdin",
        stdin=PASSPHRASE,
    )  # fmt: skip
    assert twice.returncode != 0 and "already revoked" in twice.stderr


async def request_on_lan(
    device: Path, url: str, name: str
) -> tuple[asyncio.subprocess.Process, str]:
    """`simpul enroll request --to URL` running on `device`, and the code it shows."""
    joining = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simpul.node", "--data-dir", str(device), "enroll", "request",
        "--to", url, "--name", name, "--wait", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert joining.stdout is not None
    first = await asyncio.wait_for(joining.stdout.readline(), timeout=60)
    code = re.search(rb"(\d{6})", first)
    assert code, first
    return joining, code.group(1).decode()


async def test_lan_enrollment_needs_the_code_shown_on_the_device(
    tmp_path: Path, node_processes: list[NodeProcess]
) -> None:
    admin, device = tmp_path / "admin", tmp_path / "desa"
    network_id = create_network(admin)["network_id"]
    node = await start_node_process(admin)
    node_processes.append(node)
    joining, shown = await request_on_lan(device, node.url, "desa-2")
    pending = simpul_cli(admin, "network", "pending")
    assert "desa-2" in pending.stdout
    wrong = f"{(int(shown) + 1) % 1_000_000:06d}"
    refused = simpul_cli(
        admin, "network", "admit", "--code", wrong, "--scope", "1709", "--passphrase-stdin",
        stdin=PASSPHRASE,
    )  # fmt: skip
    assert refused.returncode != 0 and "no waiting device" in refused.stderr
    admitted = simpul_cli(
        admin, "network", "admit", "--code", shown, "--scope", "1709", "--passphrase-stdin",
        stdin=PASSPHRASE,
    )  # fmt: skip
    assert admitted.returncode == 0, admitted.stderr
    out, err = await asyncio.wait_for(joining.communicate(), timeout=60)
    assert joining.returncode == 0, err
    assert network_id in out.decode()
    assert status(device)["network_id"] == network_id


def test_member_node_refuses_local_writes_outside_its_scope(
    tmp_path: Path, office_village: tuple[Path, Path]
) -> None:
    _, device = office_village  # enrolled with the scope 1709
    csv_file = tmp_path / "h.csv"
    csv_file.write_text(generate(40, "csv"))
    result = simpul_cli(device, "import", str(csv_file), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    households = [json.loads(line) for line in generate(40, "jsonl").splitlines()]
    outside = sum(1 for h in households if not h["kode_wilayah"].startswith("1709"))
    assert outside and len(summary["rejected"]) == outside
    assert all("write scope" in r["reason"] for r in summary["rejected"])
    assert status(device)["records"] == len(households) - outside


def test_admitting_outside_the_network_scope_is_one_clear_line(tmp_path: Path) -> None:
    admin, device = tmp_path / "admin", tmp_path / "kota"
    create_network(admin)
    request = tmp_path / "kota.req"
    assert simpul_cli(device, "enroll", "request", "--out", str(request)).returncode == 0
    refused = simpul_cli(
        admin, "network", "admit", str(request), "--scope", "3201", "--out",
        str(tmp_path / "kota.grant"), "--passphrase-stdin", stdin=PASSPHRASE,
    )  # fmt: skip
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (
        refused.stderr.strip()
        == "Error: cannot admit this device: scope 3201 is outside the network scope"
    )
    assert not (tmp_path / "kota.grant").exists()
