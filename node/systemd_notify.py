"""The systemd notification protocol (sd_notify) with the standard library only.

Under `Type=notify` systemd passes `$NOTIFY_SOCKET` (a unix datagram socket; a leading `@`
means the abstract namespace) and, with `WatchdogSec=`, `$WATCHDOG_USEC`. The node sends
`READY=1` once it serves, `WATCHDOG=1` every half watchdog period from a task on its event
loop (so a hung loop stops feeding it and systemd restarts the node), and `STOPPING=1` when
it shuts down. Without `$NOTIFY_SOCKET` (a terminal, the tests) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


def socket_address(value: str) -> str | bytes:
    """The address to send to: `@name` is `\\0name` in the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_period(environ: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 messages (half of $WATCHDOG_USEC), or None when off.

    $WATCHDOG_PID, when set, names the process the watchdog is meant for; another process
    (a child that inherited the environment) must not feed it.
    """
    usec = environ.get(WATCHDOG_USEC_ENV, "")
    pid = environ.get(WATCHDOG_PID_ENV, "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """Sends state changes to the service manager, if one is listening."""

    def __init__(self, address: str | None, period: float | None) -> None:
        self.address = address
        self.period = period if address else None

    @classmethod
    def from_environment(cls) -> Notifier:
        address = os.environ.get(NOTIFY_SOCKET_ENV) or None
        notifier = cls(address, watchdog_period(os.environ))
        if address:
            log.info("systemd notify socket=%s watchdog_period=%s", address, notifier.period)
        return notifier

    def send(self, *fields: str) -> bool:
        """Send `KEY=VALUE` fields as one datagram; False when not under systemd or on error."""
        if not self.address:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, socket_address(self.address))
        except OSError as exc:
            log.warning("systemd notify failed socket=%s error=%s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    async def run_watchdog(self) -> None:
        """Send WATCHDOG=1 every half period until cancelled; returns at once when off."""
        if self.period is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.period)
