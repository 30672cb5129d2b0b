"""The node's clock, guarded by a floor: the newest time the node knows has already passed.

A Raspberry Pi without a real-time clock battery boots in 1970 when it has no network
(decision 0008). Change order never depends on the clock (feeds are ordered by sequence
number, records by Automerge causality), but every signed checkpoint, the audit trail and
revocation cut-offs carry wall-clock times. So:

- The floor is the newest of: this code's release date, this node's newest signed
  checkpoint, and the start of its certificate, of the root's, and of the newest revocation
  list (times the network root signed, so really in the past; each already an hour early,
  `CLOCK_SKEW`, as the admin's own clock may run a little fast).
- Writing with a clock more than `TOLERANCE_MS` behind the floor is refused (`ClockBehind`):
  an operator sees a clear error instead of changes dated 1970, and a checkpoint is never
  dated before an earlier one of the same feed.
- Certificates are judged at `trusted_now()`, never earlier than the floor, so a clock in
  1970 does not make every certificate look "not yet valid".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from simpul.crypto import x509_profile
from simpul.crypto.network_root import CLOCK_SKEW
from simpul.node.membership import Membership
from simpul.sync.database import Database

RELEASE_FLOOR_MS = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
"""No clock that is right says a time before this version of Simpul was written."""

RELEASE_SOURCE = "the release of this Simpul version"
TOLERANCE_MS = 5 * 60 * 1000  # NTP stepping the clock back a little must not stop work


class ClockBehind(Exception):
    """The device clock is behind a time this node already knows has passed."""


def system_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class ClockFloor:
    """Wall-clock time for signing and judging, never behind what is known to have passed."""

    floor_ms: int
    source: str
    last_signed_ms: int = 0
    system: Callable[[], int] = field(default=system_ms)

    def behind_ms(self) -> int:
        """How far the system clock is behind the floor (0 when it is not)."""
        return max(0, self.floor_ms - self.system())

    def refusal(self) -> str:
        return (
            f"the device clock says {iso(self.system())}, but {self.source} is dated "
            f"{iso(self.floor_ms)}: the clock is wrong (a Raspberry Pi without a clock "
            "battery?). Set it, e.g. sudo date -u -s 'YYYY-MM-DD HH:MM', then try again"
        )

    def now_ms(self) -> int:
        """The time to sign a change with; raises ClockBehind when the clock is wrong."""
        now = self.system()
        if now + TOLERANCE_MS < self.floor_ms:
            raise ClockBehind(self.refusal())
        now = max(now, self.last_signed_ms)  # a feed's checkpoint times never go back
        self.last_signed_ms = now
        return now

    def trusted_now(self) -> datetime:
        """The time to judge certificates at: the system clock, or the floor if later."""
        return datetime.fromtimestamp(max(self.system(), self.floor_ms) / 1000, UTC)


def release_floor() -> ClockFloor:
    """A floor knowing only this release's date (a node whose store was not read)."""
    return ClockFloor(RELEASE_FLOOR_MS, RELEASE_SOURCE)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def load_floor(
    db: Database | None, origin: bytes, membership: Membership | None
) -> ClockFloor:
    """The floor of the node with feed `origin`, from its store (if it can be opened) and
    its network's files."""
    signed = 0
    if db is not None:
        sql = "SELECT at_ms FROM checkpoints WHERE origin = ? ORDER BY seq DESC LIMIT 1"
        row = await db.fetchone(sql, (origin,))
        signed = int(row[0]) if row else 0
    candidates = [(RELEASE_FLOOR_MS, RELEASE_SOURCE)]
    if signed:
        candidates.append((signed, "this node's newest signed change"))
    if membership is not None:
        root = x509_profile.load_certificate(membership.root_cert)
        candidates += [
            (_ms(membership.certificate.not_before), "this node's certificate"),
            (_ms(root.not_valid_before_utc), "the network root certificate"),
            # another device's clock signed it: allow it the skew certificates allow
            (_ms(membership.revocations.issued_at - CLOCK_SKEW), "the newest revocation list"),
        ]
    floor, source = max(candidates)
    return ClockFloor(floor, source, signed)
