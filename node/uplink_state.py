"""The uplink's files in the data dir: its settings, and what it spent and knows of the hub.

- `uplink.json`: the hub's URL, the byte budget per day and per month and the uplink
  lease (set by `simpul node --hub URL --uplink-budget DAY[/MONTH] --uplink-lease
  SECONDS`, kept for later starts).
- `uplink-state.json`: bytes spent today and this month (counted at the socket, both
  directions), when the hub was last reached, which node of the office uplinks, the
  uplink's state, and the hub frontier (what the hub is known to hold, learnt from the hub
  or from the office's uplink over LAN sync). Written atomically after every change, so
  `simpul status` can read it while the node runs.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from simpul.node.membership import write_public
from simpul.sync.frontier import Frontier

log = logging.getLogger(__name__)

CONFIG_FILE = "uplink.json"
STATE_FILE = "uplink-state.json"
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*", re.IGNORECASE)
DAYS_PER_MONTH = 30
LEASE_SECONDS = 30.0  # how long a node stands by after the uplink's term last rose
LEASE_RANGE = (3.0, 3600.0)


class UplinkConfigError(ValueError):
    """A hub URL or budget that cannot be used; the message says why."""


def parse_size(text: str) -> int:
    """`500K`, `20M`, `1.5G`, `1048576` -> bytes (K/M/G are powers of 1024)."""
    found = SIZE.fullmatch(text)
    if not found:
        raise UplinkConfigError(f"not a size: {text!r} (try 20M or 1G)")
    return int(float(found.group(1)) * UNITS[found.group(2).lower()])


def parse_budget(text: str) -> tuple[int, int]:
    """`DAY/MONTH` (e.g. `20M/300M`), or `DAY` alone (the month then allows 30 days)."""
    day, slash, month = text.partition("/")
    per_day = parse_size(day)
    return per_day, parse_size(month) if slash else per_day * DAYS_PER_MONTH


def check_hub_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or not parts.port:
        raise UplinkConfigError(f"the hub URL must look like https://HOST:PORT, not {url!r}")
    return f"https://{parts.netloc}"


def check_lease(seconds: float) -> float:
    low, high = LEASE_RANGE
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not low <= seconds <= high
    ):
        raise UplinkConfigError(
            f"the uplink lease must be {low:g} to {high:g} seconds, not {seconds!r}"
        )
    return float(seconds)


@dataclass
class UplinkConfig:
    hub: str | None = None
    budget_day: int | None = None
    budget_month: int | None = None
    lease_seconds: float = LEASE_SECONDS
    full_photos: bool = False  # photos to the hub: thumbnails only unless the admin says so


def load_config(data_dir: Path) -> UplinkConfig:
    path = data_dir / CONFIG_FILE
    if not path.exists():
        return UplinkConfig()
    try:
        config = UplinkConfig(**json.loads(path.read_text()))
        check_lease(config.lease_seconds)
    except (ValueError, TypeError) as exc:
        raise UplinkConfigError(
            f"{path} is damaged ({exc}); remove it and start with --hub"
        ) from None
    return config


def save_config(data_dir: Path, config: UplinkConfig) -> None:
    write_public(data_dir / CONFIG_FILE, json.dumps(asdict(config), indent=1).encode())


def configure(
    data_dir: Path,
    hub: str | None,
    budget: str | None,
    lease: float | None = None,
    full_photos: bool | None = None,
) -> UplinkConfig:
    """The stored settings, updated with what was given on the command line."""
    config = load_config(data_dir)
    if hub is not None:
        config.hub = check_hub_url(hub)
    if budget is not None:
        config.budget_day, config.budget_month = parse_budget(budget)
    if lease is not None:
        config.lease_seconds = check_lease(lease)
    if full_photos is not None:
        config.full_photos = full_photos
    if hub is not None or budget is not None or lease is not None or full_photos is not None:
        save_config(data_dir, config)
    return config


@dataclass
class UplinkState:
    day: str = ""
    bytes_day: int = 0
    month: str = ""
    bytes_month: int = 0
    last_reached_ms: int | None = None
    reachable: bool | None = None
    uplink_node: str | None = None
    state: str = "starting"
    last_error: str | None = None
    hub_frontier: dict[str, int] = field(default_factory=dict)

    def roll(self, now: datetime) -> None:
        """Start new day and month counters when the calendar moved on."""
        day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
        if self.day != day:
            self.day, self.bytes_day = day, 0
        if self.month != month:
            self.month, self.bytes_month = month, 0

    def charge(self, spent: int, now: datetime) -> None:
        self.roll(now)
        self.bytes_day += spent
        self.bytes_month += spent

    def frontier(self) -> Frontier:
        return Frontier({bytes.fromhex(o): s for o, s in self.hub_frontier.items()})

    def learn(self, frontier: Frontier) -> bool:
        """Merge a hub frontier (the hub only gains entries); True when it grew."""
        grew = False
        for origin, seq in frontier.items():
            if seq > self.hub_frontier.get(origin.hex(), 0):
                self.hub_frontier[origin.hex()] = seq
                grew = True
        return grew


def load_state(data_dir: Path) -> UplinkState:
    path = data_dir / STATE_FILE
    if not path.exists():
        return UplinkState()
    try:
        return UplinkState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        log.warning("uplink state unreadable path=%s reason=%s (starting afresh)", path, exc)
        return UplinkState()


def save_state(data_dir: Path, state: UplinkState) -> None:
    write_public(data_dir / STATE_FILE, json.dumps(asdict(state)).encode())


def still_to_send(state: UplinkState, mine: Frontier) -> int:
    """Entries this node holds that the hub is not known to hold."""
    held = state.hub_frontier
    return sum(max(0, seq - held.get(origin.hex(), 0)) for origin, seq in mine.items())


def facts(data_dir: Path, mine: Frontier) -> dict[str, Any] | None:
    """What status shows of the uplink, or None when no hub is configured."""
    config = load_config(data_dir)
    if config.hub is None:
        return None
    state = load_state(data_dir)
    state.roll(datetime.now())
    return {
        "hub": config.hub,
        "state": state.state,
        "reachable": state.reachable,
        "uplink_node": state.uplink_node,
        "last_reached_ms": state.last_reached_ms,
        "bytes_today": state.bytes_day,
        "bytes_this_month": state.bytes_month,
        "budget_day": config.budget_day,
        "budget_month": config.budget_month,
        "still_to_send": still_to_send(state, mine),
        "last_error": state.last_error,
    }
