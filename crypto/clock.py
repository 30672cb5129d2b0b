"""Timestamps for certificates, revocation lists and enrollment objects.

Everything Simpul signs carries UTC times in whole seconds (X.509 cannot hold less), so
every "now" is normalised here: `None` means the system clock, naive datetimes are refused
because an office laptop's local time zone must never leak into a signature.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc(now: datetime | None = None) -> datetime:
    """`now` (or the current time) as an aware UTC datetime truncated to whole seconds."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    return now.astimezone(UTC).replace(microsecond=0)
