"""What the running node's carriers did since it started: sessions, bytes and refusals.

One `SyncCounters` per running node (on `Node`), counted by every carrier under its own
name (`lan`; `usb` for drives the node's watcher syncs) and shown at `/metrics`. Counters
live in memory: they restart at zero with the process, as Prometheus counters may.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

OK = "ok"
FAILED = "failed"
BUSY = "busy"


@dataclass
class SyncCounters:
    """Counts keyed by label tuples, read by the metrics page."""

    sessions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(carrier, side: client|server, outcome: ok|failed|busy) -> sessions"""
    bytes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(carrier, direction: in|out) -> bytes on the wire"""
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(carrier, reason) -> entries refused, e.g. chain, scope, revoked, untrusted"""
    handshakes_refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(carrier, reason) -> TLS handshakes refused: no-certificate, untrusted-certificate,
    revoked, protocol (crypto/tls.py `refusal_reason`)"""

    def session(
        self,
        carrier: str,
        side: str,
        outcome: str,
        bytes_in: int = 0,
        bytes_out: int = 0,
        refused: list[str] | None = None,
    ) -> None:
        """Count one session; `refused` holds "reason: detail" texts, one per refused run."""
        self.sessions[(carrier, side, outcome)] += 1
        self.bytes[(carrier, "in")] += bytes_in
        self.bytes[(carrier, "out")] += bytes_out
        for text in refused or []:
            self.refused[(carrier, text.partition(":")[0].strip())] += 1
