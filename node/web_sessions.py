"""Login sessions of the operator page and lock-out after repeated failed logins.

A session id is 32 random bytes sent only in an HttpOnly, SameSite=Strict cookie; the
store keeps its SHA-256 (like API tokens), with the session's CSRF token and times, in
the node's SQLite database, so sessions survive a restart and a copied database gives no
working cookie. Sessions end on logout, after IDLE_MS without a request, or MAX_AGE_MS
after login.

A neighbour on the WiFi may try the login form as often as it likes, so failed logins cost
it and the node little, and tell it nothing:
- a username over MAX_USERNAME characters (or a password over MAX_PASSWORD) is refused
  before anything is looked up, hashed or stored, and logged by its length only;
- an unknown name costs the same password hash as a known one (sync/operators.py), and
  both get the same answer;
- failures are counted in memory (`LoginThrottle`), never in the database, and forgotten
  after LOCK_MS: LOCK_AFTER failures for one name from one source address lock that name
  for that address only, SOURCE_LOCK_AFTER failures of any names lock the address, and
  REMOTE_LOCK_AFTER failures for one name from all other addresses together lock that name
  for them. Nothing a stranger does locks a name for the node's own machine (loopback):
  the operator there can always log in.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass

from simpul.crypto.passwords import new_token, token_digest
from simpul.sync.database import Database
from simpul.sync.operators import Operator, Operators

log = logging.getLogger(__name__)

IDLE_MS = 8 * 3600 * 1000
MAX_AGE_MS = 24 * 3600 * 1000
TOUCH_MS = 5 * 60 * 1000  # write "seen" at most this often per session
MAX_USERNAME = 64  # operator names have at most 32 (sync/operators.py)
MAX_PASSWORD = 1024
LOCK_AFTER = 5
SOURCE_LOCK_AFTER = 20
REMOTE_LOCK_AFTER = 50
LOCK_MS = 15 * 60 * 1000
MAX_TRACKED = 10_000  # counters kept at most; the oldest go first beyond it


def now_ms() -> int:
    return int(time.time() * 1000)


def is_loopback(source: str | None) -> bool:
    """True for a request from the node's own machine (also as ::ffff:127.0.0.1)."""
    try:
        address = ipaddress.ip_address((source or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@dataclass(frozen=True)
class Session:
    """A logged-in operator and the CSRF token of their forms."""

    operator: Operator
    csrf: str


class Locked(Exception):
    """Too many failed logins for this username; `minutes` until the next try."""

    def __init__(self, minutes: int) -> None:
        super().__init__(f"locked for {minutes} more minutes")
        self.minutes = minutes


@dataclass
class _Count:
    failures: int
    since_ms: int
    locked_until_ms: int = 0


class LoginThrottle:
    """Failed logins per (source, name), per source and per name from non-loopback
    sources, each counted over LOCK_MS and locked for LOCK_MS at its limit."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], _Count] = {}

    @staticmethod
    def _keys(source: str, username: str) -> list[tuple[tuple[str, str, str], int]]:
        keys = [
            (("pair", source, username), LOCK_AFTER),
            (("source", source, ""), SOURCE_LOCK_AFTER),
        ]
        if not is_loopback(source):
            keys.append((("remote", "", username), REMOTE_LOCK_AFTER))
        return keys

    def _live(self, key: tuple[str, str, str], now: int) -> _Count | None:
        count = self._counts.get(key)
        if count is not None and max(count.locked_until_ms, count.since_ms + LOCK_MS) <= now:
            del self._counts[key]
            return None
        return count

    def locked_ms(self, source: str, username: str, now: int) -> int:
        """How long `username` stays locked for `source` (0: it may try)."""
        left = 0
        for key, _ in self._keys(source, username):
            count = self._live(key, now)
            if count is not None:
                left = max(left, count.locked_until_ms - now)
        return left

    def failed(self, source: str, username: str, now: int) -> bool:
        """Count one failure; True if it locked anything."""
        locked = False
        for key, limit in self._keys(source, username):
            count = self._live(key, now) or self._counts.setdefault(key, _Count(0, now))
            count.failures += 1
            if count.failures >= limit:
                count.failures, count.since_ms, count.locked_until_ms = 0, now, now + LOCK_MS
                locked = True
        self._bound(now)
        return locked

    def succeeded(self, source: str, username: str) -> None:
        self._counts.pop(("pair", source, username), None)

    def _bound(self, now: int) -> None:
        if len(self._counts) <= MAX_TRACKED:
            return
        for key in list(self._counts):
            self._live(key, now)
        excess = len(self._counts) - MAX_TRACKED
        oldest = sorted(self._counts, key=lambda k: self._counts[k].since_ms)[: max(0, excess)]
        for key in oldest:
            del self._counts[key]


class Sessions:
    """Sessions in one node's database, and the failed-login counts (in memory)."""

    def __init__(self, db: Database, operators: Operators) -> None:
        self.db = db
        self.operators = operators
        self.throttle = LoginThrottle()

    async def login(
        self, username: str, password: str, source: str | None
    ) -> tuple[str, Session] | None:
        """A new session (cookie value, session) for a right password; None for a wrong one
        (or a name or password too long to be one).

        Raises Locked while the username is locked out for `source`, the request's address
        (the password is not even tried).
        """
        now = now_ms()
        source = source or "unknown"
        if len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
            log.warning(
                "web login refused reason=too-long username_length=%d password_length=%d remote=%s",
                len(username),
                len(password),
                source,
            )
            return None
        locked_ms = self.throttle.locked_ms(source, username, now)
        if locked_ms > 0:
            log.info("web login refused reason=locked username=%r remote=%s", username, source)
            raise Locked(max(1, -(-locked_ms // 60000)))
        operator = await self.operators.check_login(username, password)
        if operator is None:
            locked = self.throttle.failed(source, username, now)
            log.warning(
                "web login failed username=%r remote=%s locked=%s", username, source, locked
            )
            return None
        self.throttle.succeeded(source, username)
        cookie, csrf = new_token(), secrets.token_urlsafe(32)
        async with self.db.write() as conn:
            await conn.execute("DELETE FROM web_sessions WHERE seen_ms < ?", (now - IDLE_MS,))
            await conn.execute(
                "INSERT INTO web_sessions (id_hash, username, csrf, created_ms, seen_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_digest(cookie), operator.username, csrf, now, now),
            )
        log.info("web login username=%s role=%s", operator.username, operator.role)
        return cookie, Session(operator, csrf)

    async def find(self, cookie: str) -> Session | None:
        """The live session of a cookie value (its operator's current role), or None."""
        now = now_ms()
        row = await self.db.fetchone(
            "SELECT s.id_hash, o.username, o.role, s.csrf, s.created_ms, s.seen_ms"
            " FROM web_sessions s JOIN operators o USING (username) WHERE s.id_hash = ?",
            (token_digest(cookie),),
        )
        if row is None or row[5] < now - IDLE_MS or row[4] < now - MAX_AGE_MS:
            return None
        if row[5] < now - TOUCH_MS:
            async with self.db.write() as conn:
                await conn.execute(
                    "UPDATE web_sessions SET seen_ms = ? WHERE id_hash = ?", (now, row[0])
                )
        return Session(Operator(row[1], row[2]), row[3])

    async def end(self, cookie: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "DELETE FROM web_sessions WHERE id_hash = ?", (token_digest(cookie),)
            )
