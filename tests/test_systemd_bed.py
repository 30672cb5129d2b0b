"""The units in systemd/ under a real systemd and udev: a Debian container booted with
systemd-nspawn (tests/systemd_bed.py), Simpul installed in it by `systemd/install.sh`
exactly as docs/operations.md tells an admin (from a checkout, as root; the Python
dependencies come from a local wheel folder, `SIMPUL_INSTALL_PIP_ARGS`, because the
container has no network).

One container serves the whole module (booting is cheap, installing is not); the tests
run in order: the node unit, the hub unit, a reboot, a USB drive. They skip, with the
reason, only where this machine cannot run nspawn (tests/systemd_bed.py
`unavailable_reason`); in CI (.ci/run installs systemd-container, debootstrap and
dosfstools) they run.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import systemd_bed
from conftest import REPO, generate
from systemd_bed import BedError, Machine

pytestmark = pytest.mark.systemd

PASSPHRASE = "frasa-sandi-uji-yang-panjang\n"
WAIT = 60  # seconds: a bound on each wait below
RUN_AS = (
    "systemd-run --quiet --pipe --wait --collect -p DynamicUser=yes -p User={0} "
    "-p StateDirectory={0} -p StateDirectoryMode=0700 -p UMask=0077 "
    "/opt/simpul/venv/bin/simpul --data-dir /var/lib/{0}"
)
AS_NODE, AS_HUB = RUN_AS.format("simpul"), RUN_AS.format("simpul-hub")
COPIED = ("pyproject.toml", "README.md", "node", "sync", "crypto", "systemd", "docs")


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    reason = systemd_bed.unavailable_reason()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("systemd-bed")
    root = work / "root"
    systemd_bed.unpack(systemd_bed.root_tarball(), root)
    checkout = root / "root" / "simpul"  # the admin's checkout
    checkout.mkdir()
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, checkout / name)
    shutil.copytree(systemd_bed.wheelhouse(REPO), root / "root" / "wheels")
    bed = Machine(root, work / "console.log")
    bed.boot()
    try:
        started = time.monotonic()
        bed.sh("SIMPUL_INSTALL_PIP_ARGS='--no-index --find-links /root/wheels' "
               "/root/simpul/systemd/install.sh")  # fmt: skip
        print(f"install.sh took {time.monotonic() - started:.1f} s")
        yield bed
    finally:
        bed.halt()


def show(bed: Machine, unit: str) -> dict[str, str]:
    """`systemctl show` of a unit as a dict."""
    text = bed.sh(f"systemctl show {unit}").stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def wait_for(bed: Machine, unit: str, what: str, check: object) -> dict[str, str]:
    """Poll `systemctl show` until `check(props)` holds (bounded by WAIT)."""
    deadline = time.monotonic() + WAIT
    while True:
        props = show(bed, unit)
        if check(props):  # type: ignore[operator]
            return props
        if time.monotonic() > deadline:
            journal = bed.sh(f"journalctl -u {unit} --no-pager -n 40", check=False).stdout
            raise AssertionError(f"{unit}: {what}; now {props.get('ActiveState')}\n{journal}")
        time.sleep(0.2)  # systemd has no event we can wait on from outside


def running(props: dict[str, str]) -> bool:
    return props["ActiveState"] == "active" and props["SubState"] == "running"


def proc_status(bed: Machine, pid: str) -> dict[str, str]:
    text = bed.sh(f"cat /proc/{pid}/status").stdout
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}


def check_hardened(bed: Machine, unit: str, user: str) -> None:
    """The unit's main process runs as its dynamic user with what the unit promises."""
    props = show(bed, unit)
    pid = props["MainPID"]
    status = proc_status(bed, pid)
    uid = int(status["Uid"].split()[0])
    assert 61184 <= uid <= 65519, f"{unit} runs as uid {uid}, not a dynamic user"
    owner = bed.sh(f"stat -c %u /var/lib/private/{user}").stdout.strip()
    assert owner == str(uid), "the state directory belongs to the unit's dynamic user"
    assert status["NoNewPrivs"] == "1"
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["Seccomp"] == "2"  # SystemCallFilter= (and MemoryDenyWriteExecute=)
    mounts = bed.sh(f"cat /proc/{pid}/mountinfo").stdout.splitlines()
    root_options = next(line.split()[5] for line in mounts if line.split()[4] == "/")
    assert root_options.split(",")[0] == "ro", "ProtectSystem=strict: / is read-only"
    state = f"/var/lib/private/{user}"
    writable = [line.split()[4] for line in mounts if line.split()[5].startswith("rw")]
    assert state in writable, writable  # StateDirectory=, and nothing else of /var
    assert any(line.split()[4] == "/tmp" for line in mounts), "PrivateTmp="
    # the process's view: /usr read-only, no devices (PrivateDevices=)
    inside = bed.sh(f"nsenter -t {pid} -m sh -c 'touch /usr/x 2>&1; ls /dev'", check=False)
    assert "Read-only file system" in inside.stdout, inside.stdout
    assert "sda" not in inside.stdout and "loop0" not in inside.stdout


def restarted_after_kill(bed: Machine, unit: str) -> None:
    """kill -9 of the main process: Restart=on-failure brings the unit back."""
    before = show(bed, unit)
    bed.sh(f"kill -9 {before['MainPID']}")
    wait_for(
        bed, unit, "restarted after kill -9",
        lambda p: running(p) and int(p["NRestarts"]) > int(before["NRestarts"])
        and p["MainPID"] != before["MainPID"],
    )  # fmt: skip


def test_node_unit_runs_hardened_restarts_and_logs_to_the_journal(machine: Machine) -> None:
    props = wait_for(machine, "simpul-node", "active (READY=1)", running)
    assert props["Type"] == "notify" and props["WatchdogUSec"] == "1min"
    check_hardened(machine, "simpul-node", "simpul")
    restarted_after_kill(machine, "simpul-node")
    journal = machine.sh("journalctl -u simpul-node --no-pager -o cat").stdout
    assert "http://127.0.0.1:8470" in journal, journal


def test_watchdog_restarts_a_hung_node(machine: Machine) -> None:
    """A node whose event loop stops (SIGSTOP) stops feeding the watchdog and is restarted.
    WatchdogSec= is shortened by a drop-in, as an admin would with `systemctl edit`."""
    dropin = "/etc/systemd/system/simpul-node.service.d/zz-test-watchdog.conf"
    machine.sh(
        f"mkdir -p {dropin.rsplit('/', 1)[0]} && printf '[Service]\\nWatchdogSec=4s\\n' "
        f"> {dropin} && systemctl daemon-reload && systemctl restart simpul-node"
    )
    try:
        before = wait_for(machine, "simpul-node", "active", running)
        machine.sh(f"kill -STOP {before['MainPID']}")
        wait_for(
            machine, "simpul-node", "restarted by the watchdog",
            lambda p: running(p) and p["MainPID"] != before["MainPID"],
        )  # fmt: skip
        journal = machine.sh("journalctl -u simpul-node --no-pager -o cat").stdout
        assert "Watchdog timeout" in journal, journal[-2000:]
    finally:
        machine.sh(f"rm -f {dropin} && systemctl daemon-reload && systemctl restart simpul-node")


def test_doctor_passes_inside_and_admin_commands_run_as_the_service_user(
    machine: Machine,
) -> None:
    machine.sh(f"{AS_NODE} network create --name 'Dinsos Uji' --scope 1709 --passphrase-stdin",
               stdin=PASSPHRASE)  # fmt: skip
    csv_text = generate(40, "csv", seed=41)
    # a file to import must be readable by the service's user (docs/operations.md)
    state = machine.root / "var" / "lib" / "private" / "simpul"
    (state / "households.csv").write_text(csv_text)
    (state / "households.csv").chmod(0o644)
    imported = machine.sh(f"{AS_NODE} import --json /var/lib/simpul/households.csv")
    assert json.loads(imported.stdout)["created"] > 0
    machine.sh("systemctl restart simpul-node")  # the node now serves the network
    wait_for(machine, "simpul-node", "active", running)
    doctor = machine.sh(f"{AS_NODE} doctor", check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def node_facts(bed: Machine) -> dict[str, object]:
    status = json.loads(bed.sh(f"{AS_NODE} status --json").stdout)
    return {k: status[k] for k in ("node_id", "network_id", "records")}


def test_hub_unit_runs_hardened_and_restarts(machine: Machine) -> None:
    request, grant = "/var/lib/simpul-hub/hub.req", "/var/lib/simpul/hub.grant"
    machine.sh(f"{AS_HUB} enroll request --out {request}")
    hub_state = machine.root / "var" / "lib" / "private" / "simpul-hub"
    node_state = machine.root / "var" / "lib" / "private" / "simpul"
    shutil.copy(hub_state / "hub.req", node_state / "hub.req")
    (node_state / "hub.req").chmod(0o644)
    machine.sh(f"{AS_NODE} network admit /var/lib/simpul/hub.req --role hub --scope 1709 "
               f"--out {grant} --passphrase-stdin", stdin=PASSPHRASE)  # fmt: skip
    for name in ("hub.grant",):
        shutil.copy(node_state / name, hub_state / name)
        (hub_state / name).chmod(0o644)
    shutil.copy(node_state / "network" / "root.cert.pem", hub_state / "root.cert.pem")
    (hub_state / "root.cert.pem").chmod(0o644)
    machine.sh(f"{AS_HUB} hub trust /var/lib/simpul-hub/root.cert.pem "
               "--grant /var/lib/simpul-hub/hub.grant")  # fmt: skip
    machine.sh("systemctl enable --now simpul-hub")
    props = wait_for(machine, "simpul-hub", "active (READY=1)", running)
    assert props["Type"] == "notify"
    check_hardened(machine, "simpul-hub", "simpul-hub")
    restarted_after_kill(machine, "simpul-hub")
    journal = machine.sh("journalctl -u simpul-hub --no-pager -o cat").stdout
    assert re.search(r"listening on \S+:\d+", journal), journal


def test_reboot_keeps_the_data_and_starts_the_units_again(machine: Machine) -> None:
    before = node_facts(machine)
    assert before["records"]
    machine.halt()
    machine.boot()
    wait_for(machine, "simpul-node", "active after the reboot", running)
    wait_for(machine, "simpul-hub", "active after the reboot", running)
    assert node_facts(machine) == before
    journal = machine.sh("journalctl -u simpul-node -b --no-pager -o cat").stdout
    assert "http://127.0.0.1:8470" in journal, journal  # this boot's log, in the journal


def test_the_bed_reports_a_failing_command(machine: Machine) -> None:
    with pytest.raises(BedError, match="exit 3"):
        machine.sh("exit 3")


# A loop device is how a "USB drive" reaches udev here; only a real one has ID_BUS=usb, so
# the test adds this rule (ordered before the project's 99-simpul-usb.rules) to make the
# loop device look like one. Everything else is the project's rule.
LOOP_IS_USB = (
    'SUBSYSTEM=="block", KERNEL=="loop[0-9]*", ENV{ID_FS_TYPE}=="vfat", ENV{ID_BUS}="usb"\n'
)


def mount_options() -> str:
    """The options simpul-usb-mount@.service mounts a drive with."""
    unit = (REPO / "systemd" / "simpul-usb-mount@.service").read_text()
    found = re.search(r"--options=(\S+)", unit)
    assert found, "simpul-usb-mount@.service names no mount options"
    return found.group(1)


@pytest.fixture(scope="module")
def usb_drive(machine: Machine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A vfat "USB drive" (a loop device) plugged in while the container was off: the
    boot's coldplug announces it to udev as an "add". Unplugged (and rebooted) after."""
    image = tmp_path_factory.mktemp("usb") / "courier.img"
    with image.open("wb") as drive:
        drive.truncate(32 * 1024 * 1024)
    systemd_bed.run(["mkfs.vfat", "-n", "KURIR", str(image)])
    device = systemd_bed.run(["losetup", "--find", "--show", str(image)]).strip()
    rules = machine.root / "etc" / "udev" / "rules.d" / "98-test-loop-is-usb.rules"
    try:
        rules.write_text(LOOP_IS_USB)
        machine.halt()
        machine.devices = (device,)
        machine.boot()
        yield device
    finally:
        machine.sh(f"umount {device}", check=False)
        machine.halt()
        machine.devices = ()
        rules.unlink(missing_ok=True)
        systemd_bed.run(["losetup", "-d", device])
        machine.boot()


def test_udev_runs_the_rule_for_a_plugged_vfat_drive(machine: Machine, usb_drive: str) -> None:
    """A real udev evaluates the project's rule for the drive and asks systemd for
    simpul-usb-mount@DEVICE.service. (PID 1 in a container has no device units, so it
    cannot start that unit, which BindsTo= the device: that step needs a VM.)"""
    name = usb_drive.removeprefix("/dev/")
    machine.sh("udevadm settle")
    info = machine.sh(f"udevadm info --query=property {usb_drive}").stdout
    assert f"SYSTEMD_WANTS=simpul-usb-mount@{name}.service" in info, info
    assert "ID_FS_TYPE=vfat" in info and ":systemd:" in info, info


def test_the_hardened_node_syncs_a_drive_mounted_under_media_simpul(
    machine: Machine, usb_drive: str
) -> None:
    """Mounted with the mount unit's own options where it would mount it, after the node
    started: the node (dynamic user, read-only system, private mounts) finds the drive and
    writes its records onto it."""
    if "vfat" not in Path("/proc/filesystems").read_text():
        pytest.skip("this kernel has no vfat file system (and cannot load modules)")
    drive = f"/media/simpul/{usb_drive.removeprefix('/dev/')}"
    wait_for(machine, "simpul-node", "active", running)
    machine.sh(f"mkdir -p {drive} && mount -t vfat -o {mount_options()} {usb_drive} {drive}"
               f" && mkdir {drive}/SIMPUL")  # fmt: skip
    deadline = time.monotonic() + WAIT
    while True:
        status = json.loads(machine.sh(f"{AS_NODE} status --json").stdout)
        usb = status["usb"] or {}
        if usb.get("drive") == drive and usb.get("state") == "selesai":
            break
        assert time.monotonic() < deadline and usb.get("state") != "gagal", usb
        time.sleep(0.5)  # the watcher polls; so does the page
    assert machine.sh(f"find {drive}/SIMPUL -type f").stdout.split(), "nothing written"
    inspected = machine.sh(f"{AS_NODE} usb inspect {drive}")
    assert status["network_id"][:8] in inspected.stdout, inspected.stdout
