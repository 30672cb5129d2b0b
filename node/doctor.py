"""`simpul doctor`: checks of one node, each with a status, a plain explanation and the fix.

Statuses: `ok`, `warn` (works, but needs attention soon), `fail` (something is wrong now;
the command exits non-zero). The checks only read: a damaged database is never opened for
writing, and a missing key is never created.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from simpul.crypto import x509_profile
from simpul.crypto.node_key import verify_signature
from simpul.node.clock_floor import TOLERANCE_MS, ClockFloor, iso, load_floor
from simpul.node.membership import (
    DATA_KEYS,
    EXCHANGE_KEY_FILE,
    MEMBERS,
    NETWORK_DIR,
    ROOT_KEY,
    Membership,
    MembershipError,
    load_membership,
)
from simpul.node.peers import PeerTable
from simpul.node.runtime import DB_FILE, DISCOVERY_ENV, KEY_FILE, Node, open_node
from simpul.sync.feed import FeedError
from simpul.sync.migrations import SCHEMA_VERSION
from simpul.sync.refusals import refused_per_origin

OK = "ok"
WARN = "warn"
FAIL = "fail"

SECRET_FILES = (
    KEY_FILE,
    EXCHANGE_KEY_FILE,
    f"{NETWORK_DIR}/{ROOT_KEY}",
    f"{NETWORK_DIR}/{DATA_KEYS}",
    f"{NETWORK_DIR}/{MEMBERS}",
)
DISK_FAIL_BYTES = 100 * 1024**2
DISK_WARN_BYTES = 1024**3
CERT_WARN = timedelta(days=30)
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000
HUB_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, how it stands, why in plain words, and what to do."""

    name: str
    status: str
    explanation: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_permissions(data_dir: Path) -> list[Check]:
    """The data dir is the node's alone; private keys are readable by the node only."""
    found = []
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    owner = data_dir.stat().st_uid
    if mode & 0o077:
        found.append(
            Check(
                "data dir permissions",
                FAIL,
                f"{data_dir} has mode {mode:o}: other users of this device can look inside "
                "(records and keys)",
                f"chmod 700 {data_dir}",
            )
        )
    for name in SECRET_FILES:
        path = data_dir / name
        if not path.exists():
            continue
        info = path.stat()
        if stat.S_IMODE(info.st_mode) & 0o077:
            found.append(
                Check(
                    "key file permissions",
                    FAIL,
                    f"{path} has mode {stat.S_IMODE(info.st_mode):o}: other users of this "
                    "device can read a secret key (whoever copies node.key can sign as "
                    "this node)",
                    f"chmod 600 {path}",
                )
            )
        if info.st_uid != owner:
            found.append(
                Check(
                    "key file owner",
                    FAIL,
                    f"{path} belongs to user {info.st_uid}, the data dir to {owner}: the node "
                    "may not be able to read it (an admin command run as root?)",
                    f"chown {owner} {path}",
                )
            )
    if not found:
        found.append(Check("permissions", OK, f"{data_dir} and its key files are private"))
    return found


def _integrity(path: Path) -> tuple[str, int]:
    """`PRAGMA integrity_check`'s first line and the schema version, read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchall()
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()
    return str(result[0][0]) if result else "no answer", version


def damaged(path: Path, detail: str) -> Check:
    data_dir = path.parent
    return Check(
        "database",
        FAIL,
        f"the database file {path} is damaged ({detail}); the node cannot trust it",
        "stop the node (sudo systemctl stop simpul-node), move the data dir aside "
        f"(mv {data_dir} {data_dir}.damaged), restore the newest backup into it "
        f"('simpul --data-dir {data_dir} restore BACKUP') and enrol the device again: the "
        "changes the backup lacks come back from the peers. Without a backup, salvage: "
        f"sqlite3 {data_dir}.damaged/{path.name} .recover | sqlite3 {path}",
    )


def check_database(path: Path) -> tuple[Check, bool]:
    """Integrity of the SQLite file; True when it is safe to open the node on it."""
    if not path.exists():
        return Check("database", WARN, "no database yet", "start the node once: simpul node"), False
    try:
        first, version = _integrity(path)
    except sqlite3.Error as exc:
        return damaged(path, str(exc)), False
    if first != "ok":
        return damaged(path, first), False
    if version > SCHEMA_VERSION:
        return (
            Check(
                "database",
                FAIL,
                f"the database is schema version {version}, made by a newer Simpul than "
                f"this one ({SCHEMA_VERSION})",
                "install the newer Simpul again (systemd/install.sh from its checkout)",
            ),
            False,
        )
    if version < SCHEMA_VERSION:
        return (
            Check(
                "database",
                OK,
                f"intact; schema version {version} is upgraded to {SCHEMA_VERSION} when the "
                "node starts",
            ),
            False,
        )
    return Check("database", OK, "intact (PRAGMA integrity_check)"), True


def check_clock(clock: ClockFloor) -> Check:
    behind = clock.behind_ms()
    if behind > TOLERANCE_MS:
        return Check(
            "clock",
            FAIL,
            f"{clock.refusal().split(': the clock')[0]}: the clock is behind by "
            f"{behind // 86_400_000} days. The node refuses to write until it is right, so "
            "changes are never dated in the past",
            f"set the real time: sudo date -u -s '{iso(clock.floor_ms)[:16]}' is the "
            "earliest it can be (use the real time); keep fake-hwclock installed, fit a "
            "clock battery, and run 'sudo timedatectl set-ntp true' for days with internet",
        )
    return Check("clock", OK, f"{iso(clock.system())}, not before {clock.source}")


def check_disk(data_dir: Path) -> Check:
    usage = shutil.disk_usage(data_dir)
    free_mib = usage.free // 1024**2
    explanation = f"{free_mib} MiB free of {usage.total // 1024**2} MiB on the data dir's disk"
    fix = (
        "delete old exports and backups on this disk, or move the data dir to a larger one; "
        "a full disk stops every edit"
    )
    if usage.free < DISK_FAIL_BYTES:
        return Check("free disk", FAIL, explanation, fix)
    if usage.free < DISK_WARN_BYTES or usage.free < usage.total // 20:
        return Check("free disk", WARN, explanation, fix)
    return Check("free disk", OK, explanation)


def _default_interface(route_table: Path = Path("/proc/net/route")) -> str | None:
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return None


def _flags(interface: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{interface}/flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return 0


def check_multicast() -> Check:
    name = "multicast"
    if os.environ.get(DISCOVERY_ENV, "").lower() == "off":
        return Check(
            name,
            OK,
            f"discovery is off (${DISCOVERY_ENV}=off): peers come only from 'simpul peer add'",
        )
    interface = _default_interface()
    if interface is None:
        candidates = [
            p.name
            for p in sorted(Path("/sys/class/net").glob("*"))
            if _flags(p.name) & IFF_UP and not _flags(p.name) & IFF_LOOPBACK
        ]
        if not candidates:
            return Check(
                name,
                WARN,
                "no network interface is up: other nodes cannot find or reach this one",
                "connect the office cable or WiFi; check with 'ip link'",
            )
        interface = candidates[0]
    flags = _flags(interface)
    if not flags & IFF_UP:
        return Check(
            name,
            WARN,
            f"the active interface {interface} is down",
            f"sudo ip link set {interface} up",
        )
    if not flags & IFF_MULTICAST:
        return Check(
            name,
            WARN,
            f"multicast is off on {interface}: other nodes cannot find this one by mDNS",
            f"sudo ip link set {interface} multicast on; or add peers by hand on every node "
            "with 'simpul peer add HOST:PORT'",
        )
    return Check(name, OK, f"{interface} is up with multicast (mDNS discovery can work)")


def check_certificates(membership: Membership | None, clock: ClockFloor) -> list[Check]:
    if membership is None:
        return [Check("certificate", OK, "this node is not in a network yet (nothing expires)")]
    now = clock.trusted_now()
    node = membership.certificate
    root = x509_profile.load_certificate(membership.root_cert)
    found = []
    if membership.revocations.is_revoked(node.node_id, at=now):
        found.append(
            Check(
                "certificate",
                FAIL,
                f"this node ({node.node_id}) is revoked: the others refuse it",
                "move this data dir aside and enrol the device again as a new node",
            )
        )
    for what, until in (
        ("this node's certificate", node.not_after),
        ("the network root certificate", root.not_valid_after_utc),
    ):
        left = until - now
        if left <= timedelta(0):
            found.append(
                Check(
                    "certificate",
                    FAIL,
                    f"{what} expired on {until:%Y-%m-%d}: peers refuse this node",
                    "ask the admin to admit this device again ('simpul enroll request')",
                )
            )
        elif left < CERT_WARN:
            found.append(
                Check(
                    "certificate",
                    WARN,
                    f"{what} expires on {until:%Y-%m-%d} ({left.days} days)",
                    "ask the admin to admit this device again before then",
                )
            )
    if not found:
        found.append(Check("certificate", OK, f"valid until {node.not_after:%Y-%m-%d}"))
    return found


def check_hub(url: str | None) -> Check:
    if not url:
        return Check("hub", OK, "not configured")
    target = url.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(target, timeout=HUB_TIMEOUT_SECONDS) as answer:
            status = answer.status
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Check(
            "hub",
            FAIL,
            f"the hub at {url} cannot be reached: {exc}",
            "check this device's internet connection and the hub address",
        )
    if status != 200:
        return Check("hub", FAIL, f"the hub at {url} answered {status}", "ask the hub's admin")
    return Check("hub", OK, f"the hub at {url} answers")


REFUSAL_FIXES = {
    "scope": "node {origin} wrote households outside its write scope. Admit it again with a "
    "--scope that covers them ('simpul network admit … --scope PREFIX'), or correct those "
    "households on that node",
    "revoked": "node {origin} wrote these after it was revoked; they stay out. Enter what is "
    "still needed again on an enrolled device",
    "actor": "node {origin} sent changes made under another identity: revoke it ('simpul "
    "network revoke {origin}') unless you know why",
    "depends": "these changes build on refused ones: fix the refused ones first",
    "chain": "the feed of node {origin} was altered, or two devices share its identity (a "
    "copied SD card, a restored backup): stop the copy and enrol it again as a new node",
    "own-feed": "another device uses this node's identity (a copied SD card or a restored "
    "backup): stop it and enrol it again as a new node",
    "untrusted": "node {origin} has no valid certificate of this network: enrol it again",
}
EXPECTED_REFUSALS = ("revoked",)  # a consequence of a revocation: a warning, not a failure


async def check_refusals(node: Node) -> list[Check]:
    """Entries this node refuses, and peers that say they refuse entries: records differ
    between nodes until it is fixed."""
    found = []
    refused = await refused_per_origin(node.db)
    for origin, reasons in sorted(refused.items()):
        for reason, count in sorted(reasons.items()):
            found.append(
                Check(
                    "sync refusals",
                    WARN if reason in EXPECTED_REFUSALS else FAIL,
                    f"{count} entries of node {origin} are refused here ({reason}): kept, "
                    "not applied, so this node's records differ from that node's",
                    REFUSAL_FIXES.get(reason, "see docs/protocol.md, 'Receiving'").format(
                        origin=origin
                    ),
                )
            )
    for peer in await PeerTable(node.db).list_all():
        for reason, count in sorted(peer.to_json()["refused_by_peer"].items()):
            name = peer.name or peer.node_id or peer.address
            found.append(
                Check(
                    "peer refusals",
                    WARN if reason in EXPECTED_REFUSALS else FAIL,
                    f"peer {name} refuses {count} entries ({reason}) as of its last session",
                    f"run 'simpul doctor' on {name} for the fix",
                )
            )
    return found or [Check("sync refusals", OK, "nothing refused here or by any peer")]


async def check_node(
    data_dir: Path, membership: Membership | None
) -> tuple[list[Check], ClockFloor]:
    """Verify every feed on the opened node; also its clock floor from the store."""
    async with open_node(data_dir) as node:
        try:
            verified = await node.records.verify_feeds(verify_signature)
            refusals = await check_refusals(node)
        except sqlite3.Error as exc:
            return [damaged(data_dir / DB_FILE, str(exc))], node.clock
        except FeedError as exc:
            return (
                [
                    Check(
                        "feeds",
                        FAIL,
                        f"a feed does not verify ({exc}): the database was altered outside Simpul",
                        "restore the newest backup into a new data dir ('simpul restore') and "
                        "tell the admin; do not sync this node until then",
                    )
                ],
                node.clock,
            )
        entries = sum(verified.values())
        feeds = Check("feeds", OK, f"{len(verified)} feeds, {entries} entries verified")
        return [feeds, *refusals], node.clock


async def run_checks(data_dir: Path, hub_url: str | None = None) -> list[Check]:
    """Every check of the node in `data_dir`, in the order an admin should read them."""
    if not data_dir.is_dir():
        return [
            Check(
                "data dir",
                FAIL,
                f"there is no node in {data_dir}",
                "start one with 'simpul node', or pass the right --data-dir",
            )
        ]
    results = check_permissions(data_dir)
    try:
        membership = load_membership(data_dir)
    except MembershipError as exc:
        membership = None
        results.append(Check("network files", FAIL, str(exc), "restore them from a backup"))
    database, openable = check_database(data_dir / DB_FILE)
    results.append(database)
    key_readable = os.access(data_dir / KEY_FILE, os.R_OK)
    if openable and key_readable:
        feeds, clock = await check_node(data_dir, membership)
        results += feeds
    else:
        clock = await _floor_without_store(membership)
    results.append(check_clock(clock))
    results.append(check_disk(data_dir))
    results.append(check_multicast())
    results += check_certificates(membership, clock)
    results.append(await asyncio.to_thread(check_hub, hub_url))
    return results


async def _floor_without_store(membership: Membership | None) -> ClockFloor:
    return await load_floor(None, b"", membership)
