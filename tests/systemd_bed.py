"""A real systemd for the tests: a Debian root file system booted with systemd-nspawn.

`root_tarball()` builds (debootstrap, about a minute) or reuses a minimal Debian bookworm
with systemd, udev and Python, cached as a tarball under /var/cache/simpul-test/ and keyed
by everything that goes into it (suite, packages, mirror, architecture). `wheelhouse()`
does the same for Simpul's Python dependencies (`pip download` from PyPI on the host,
keyed by the dependencies pyproject.toml lists), so installing inside the container needs
no network: the container runs with a private network, which udev inside needs.

`Machine(root)` boots the unpacked tree (`systemd-nspawn --boot`, systemd as PID 1, udev
running with writable /sys, the given loop devices bound in) and runs commands in it with
`nsenter` into the container's PID 1 (machinectl cannot reach it here). `halt()` shuts it
down cleanly; booting it again is a reboot with the same disk.

`unavailable_reason()` says why this machine cannot do it (not root, no nspawn or
debootstrap, no Debian mirror configured), for a skip with that reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import time
import tomllib
from pathlib import Path

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("SIMPUL_TEST_CACHE", "/var/cache/simpul-test"))
SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "udev", "python3", "python3-venv", "iproute2")
BED_VERSION = "1"  # raise when the way the tree is made changes
SOURCES = Path("/etc/apt/sources.list.d")
BOOT_SECONDS = 60
COMMAND_SECONDS = 300


class BedError(RuntimeError):
    """A step of the test bed failed; the message has the command and its output."""


def run(argv: list[str], timeout: float = COMMAND_SECONDS) -> str:
    """Run a host command; its stdout, or BedError with stdout and stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BedError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def mirror() -> str | None:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    texts = [p.read_text() for p in sorted(SOURCES.glob("*.sources"))]
    for text in texts:
        found = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", text, re.MULTILINE)
        if found:
            return found.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        found = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", legacy.read_text(), re.M)
        if found:
            return found.group(1)
    return None


def unavailable_reason() -> str | None:
    """Why this machine cannot run the bed, or None."""
    if os.geteuid() != 0:
        return "the systemd test bed needs root"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "losetup", "mkfs.vfat"):
        if shutil.which(tool) is None:
            return f"the systemd test bed needs {tool} (.ci/run installs it)"
    if mirror() is None and not any(CACHE.glob("rootfs-*.tar")):
        return "no Debian mirror configured for debootstrap"
    return None


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def root_tarball() -> Path:
    """The cached Debian tree as a tarball (built once per set of inputs)."""
    source = mirror() or ""
    key = _key(BED_VERSION, SUITE, ",".join(PACKAGES), source, platform.machine())
    tarball = CACHE / f"rootfs-{SUITE}-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    build = CACHE / f"build-{key}-{os.getpid()}"
    started = time.monotonic()
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             SUITE, str(build), source], timeout=900)  # fmt: skip
        partial = tarball.with_suffix(f".{os.getpid()}.part")
        run(["tar", "-C", str(build), "--numeric-owner", "-cf", str(partial), "."])
        partial.rename(tarball)  # atomic: a concurrent run sees all or nothing
    finally:
        shutil.rmtree(build, ignore_errors=True)
    log.info(
        "systemd_bed rootfs built seconds=%.0f tarball=%s", time.monotonic() - started, tarball
    )
    return tarball


def wheelhouse(repo: Path) -> Path:
    """Wheels of Simpul's dependencies (and its build backend) for an offline install."""
    dependencies = _dependencies((repo / "pyproject.toml").read_text())
    key = _key(BED_VERSION, *dependencies, platform.machine())
    wheels = CACHE / f"wheels-{key}"
    if (wheels / ".complete").exists():
        return wheels
    partial = CACHE / f"wheels-{key}.{os.getpid()}.part"
    shutil.rmtree(partial, ignore_errors=True)
    pip = ["python3", "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--python-version", "3.11", "--dest", str(partial)]  # fmt: skip
    run([*pip, *dependencies, "setuptools>=68", "wheel"], timeout=600)
    (partial / ".complete").touch()
    shutil.rmtree(wheels, ignore_errors=True)
    partial.rename(wheels)
    return wheels


def _dependencies(pyproject: str) -> list[str]:
    return list(tomllib.loads(pyproject)["project"]["dependencies"])


def unpack(tarball: Path, root: Path) -> None:
    """A fresh copy of the cached tree at `root`."""
    root.mkdir(parents=True)
    run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)])


def _container_init(nspawn: int) -> int:
    """The host PID of the container's systemd (nspawn's child once it runs systemd), or 0."""
    with contextlib.suppress(OSError, ValueError):
        children = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
        for child in children:
            if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                return int(child)
    return 0


class Machine:
    """The unpacked tree at `root`, booted with systemd as PID 1 (see the module doc)."""

    def __init__(self, root: Path, log: Path, devices: tuple[str, ...] = ()) -> None:
        self.root = root
        self.log = log
        self.devices = devices
        self.process: subprocess.Popen[bytes] | None = None
        self.init = 0

    def boot(self) -> None:
        """Boot, and return once systemd says the system is up (running or degraded)."""
        argv = ["systemd-nspawn", "-D", str(self.root), "--boot", "--register=no",
                "--keep-unit", "--console=pipe", "--private-network",
                *[f"--bind={device}" for device in self.devices]]  # fmt: skip
        env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "1"}  # udev needs /sys
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + BOOT_SECONDS
        while not self.init:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BedError(f"nspawn did not start a container:\n{self.log.read_text()}")
            self.init = _container_init(self.process.pid)
            time.sleep(0.05)  # polling /proc: there is no event for a child's birth
        state = ""
        up = {"running", "degraded"}
        while state not in up and time.monotonic() < deadline:  # until systemd answers "up"
            state = self.sh("systemctl is-system-running --wait", check=False).stdout.strip()
            if state not in up:
                time.sleep(0.05)  # its socket is not there yet, or it is still starting
        if state not in {"running", "degraded"}:
            raise BedError(f"the container's systemd is {state!r}:\n{self.log.read_text()}")
        if state == "degraded":
            failed = self.sh("systemctl --failed --no-legend --plain", check=False).stdout
            log.info("systemd_bed degraded failed_units=%s", failed.split())

    def sh(
        self, script: str, *, check: bool = True, stdin: str | None = None,
        timeout: float = COMMAND_SECONDS,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a shell script in the container (as root, in all its namespaces)."""
        argv = ["nsenter", "-t", str(self.init), "-a", "/usr/bin/env", "-i",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8", "/bin/sh", "-c", script]  # fmt: skip
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise BedError(f"in the container: {script}\nexit {done.returncode}\n"
                           f"{done.stdout}\n{done.stderr}")  # fmt: skip
        return done

    def halt(self) -> None:
        """A clean shutdown (SIGTERM to nspawn halts the container's systemd)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=BOOT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=BOOT_SECONDS)
        self.init = 0
