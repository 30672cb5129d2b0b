"""Login sessions of the operator page and lock-out after repeated failed logins.

A session id is 32 random bytes sent only in an HttpOnly, SameSite=Strict cookie; the
store keeps its SHA-256 (like API tokens), with the session's CSRF token and times, in
the node's SQLite database, so sessions survive a restart and a copied database gives no
working cookie. Sessions end on logout, after IDLE_MS without a request, or MAX_AGE_MS
after login. LOCK_AFTER failed logins for one username lock it for LOCK_MS (counted per
username, known or not, so the answer does not reveal which names exist).
"""

from __future__ import annotations

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
LOCK_AFTER = 5
LOCK_MS = 15 * 60 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


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


class Sessions:
    """Sessions and failed-login counts in one node's database."""

    def __init__(self, db: Database, operators: Operators) -> None:
        self.db = db
        self.operators = operators

    async def login(self, username: str, password: str) -> tuple[str, Session] | None:
        """A new session (cookie value, session) for a right password; None for a wrong one.

        Raises Locked while the username is locked out (the password is not even tried).
        """
        now = now_ms()
        row = await self.db.fetchone(
            "SELECT failures, locked_until_ms FROM login_failures WHERE username = ?", (username,)
        )
        if row is not None and row[1] > now:
            raise Locked(max(1, -(-(row[1] - now) // 60000)))
        operator = await self.operators.check_login(username, password)
        if operator is None:
            await self._failed(username, (row[0] if row else 0) + 1, now)
            return None
        cookie, csrf = new_token(), secrets.token_urlsafe(32)
        async with self.db.write() as conn:
            await conn.execute("DELETE FROM login_failures WHERE username = ?", (username,))
            await conn.execute("DELETE FROM web_sessions WHERE seen_ms < ?", (now - IDLE_MS,))
            await conn.execute(
                "INSERT INTO web_sessions (id_hash, username, csrf, created_ms, seen_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_digest(cookie), operator.username, csrf, now, now),
            )
        log.info("web login username=%s role=%s", operator.username, operator.role)
        return cookie, Session(operator, csrf)

    async def _failed(self, username: str, failures: int, now: int) -> None:
        locked_until = now + LOCK_MS if failures >= LOCK_AFTER else 0
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO login_failures (username, failures, locked_until_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (username) DO UPDATE SET failures = excluded.failures,"
                " locked_until_ms = excluded.locked_until_ms",
                (username, 0 if locked_until else failures, locked_until),
            )
        log.warning(
            "web login failed username=%s failures=%d locked=%s",
            username,
            failures,
            bool(locked_until),
        )

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
