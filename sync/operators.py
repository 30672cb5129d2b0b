"""Operator accounts (operator, verifier, admin) and their API tokens, kept in the node's store."""

from __future__ import annotations

import functools
import re
import secrets
import time
from dataclasses import dataclass

import aiosqlite

from simpul.crypto.passwords import check_password, hash_password, new_token, token_digest
from simpul.sync.database import Database

ROLES = ("operator", "verifier", "admin")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")
MIN_PASSWORD = 8


@functools.cache
def _stand_in_hash() -> str:
    """A hash of a random password, checked for names that have none."""
    return hash_password(secrets.token_urlsafe(16))


class OperatorError(Exception):
    """A bad username, role or password, an unknown operator, or a duplicate."""


@dataclass(frozen=True)
class Operator:
    username: str
    role: str


@dataclass(frozen=True)
class Account:
    """An operator as the admin sees it: role, whether disabled, how many API tokens."""

    username: str
    role: str
    created_ms: int
    disabled_ms: int | None
    tokens: int


@dataclass(frozen=True)
class TokenInfo:
    """An API token without its secret: `id` is the start of its digest (hex)."""

    id: str
    username: str
    created_ms: int


TOKEN_ID_CHARS = 12


class Operators:
    """The operator accounts of one node."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, username: str, role: str, password: str) -> Operator:
        if not USERNAME.match(username):
            raise OperatorError(
                "username must be 2-32 characters: lowercase letters, digits, '.', '_' or '-'"
            )
        if role not in ROLES:
            raise OperatorError(f"role must be one of {', '.join(ROLES)}")
        _check_password(password)
        async with self.db.write() as conn:
            async with conn.execute(
                "SELECT 1 FROM operators WHERE username = ?", (username,)
            ) as cursor:
                if await cursor.fetchone():
                    raise OperatorError(f"operator {username!r} already exists")
            await conn.execute(
                "INSERT INTO operators (username, role, password_hash, created_ms)"
                " VALUES (?, ?, ?, ?)",
                (username, role, hash_password(password), int(time.time() * 1000)),
            )
        return Operator(username, role)

    async def get(self, username: str) -> Operator | None:
        row = await self.db.fetchone(
            "SELECT username, role FROM operators WHERE username = ?", (username,)
        )
        return Operator(row[0], row[1]) if row else None

    async def list_all(self) -> list[Operator]:
        rows = await self.db.fetchall("SELECT username, role FROM operators ORDER BY username")
        return [Operator(row[0], row[1]) for row in rows]

    async def accounts(self) -> list[Account]:
        """Every operator with role, creation, disabled time and token count."""
        rows = await self.db.fetchall(
            "SELECT o.username, o.role, o.created_ms, o.disabled_ms,"
            " (SELECT count(*) FROM tokens t WHERE t.username = o.username)"
            " FROM operators o ORDER BY o.username"
        )
        return [Account(*row) for row in rows]

    async def _existing(self, conn: aiosqlite.Connection, username: str) -> None:
        async with conn.execute(
            "SELECT 1 FROM operators WHERE username = ?", (username,)
        ) as cursor:
            if await cursor.fetchone() is None:
                raise OperatorError(f"no operator named {username!r}")

    async def set_disabled(self, username: str, disabled: bool) -> None:
        """Disable (no login, tokens refused, open page sessions ended) or enable again.

        The account stays: its name is in the audit trail of every change it made.
        """
        async with self.db.write() as conn:
            await self._existing(conn, username)
            await conn.execute(
                "UPDATE operators SET disabled_ms = ? WHERE username = ?",
                (int(time.time() * 1000) if disabled else None, username),
            )
            if disabled:
                await conn.execute("DELETE FROM web_sessions WHERE username = ?", (username,))

    async def reset_password(self, username: str, password: str) -> None:
        """Set a new password and end the operator's page sessions."""
        _check_password(password)
        async with self.db.write() as conn:
            await self._existing(conn, username)
            await conn.execute(
                "UPDATE operators SET password_hash = ? WHERE username = ?",
                (hash_password(password), username),
            )
            await conn.execute("DELETE FROM web_sessions WHERE username = ?", (username,))

    async def check_login(self, username: str, password: str) -> Operator | None:
        """The operator whose password this is, or None. An unknown name costs the same
        password hash as a known one, so the time of a failure does not say which names
        exist."""
        row = await self.db.fetchone(
            "SELECT username, role, password_hash FROM operators"
            " WHERE username = ? AND disabled_ms IS NULL",
            (username,),
        )
        if row is None:
            check_password(password, _stand_in_hash())
            return None
        if not check_password(password, row[2]):
            return None
        return Operator(row[0], row[1])

    async def create_token(self, username: str) -> str:
        if await self.get(username) is None:
            raise OperatorError(
                f"no operator named {username!r}; add one with 'simpul operator add'"
            )
        token = new_token()
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO tokens (token_hash, username, created_ms) VALUES (?, ?, ?)",
                (token_digest(token), username, int(time.time() * 1000)),
            )
        return token

    async def by_token(self, token: str) -> Operator | None:
        row = await self.db.fetchone(
            "SELECT o.username, o.role FROM tokens t JOIN operators o USING (username)"
            " WHERE t.token_hash = ? AND o.disabled_ms IS NULL",
            (token_digest(token),),
        )
        return Operator(row[0], row[1]) if row else None

    async def tokens(self) -> list[TokenInfo]:
        """Every API token (never its secret), oldest first."""
        rows = await self.db.fetchall(
            "SELECT token_hash, username, created_ms FROM tokens ORDER BY created_ms, username"
        )
        return [TokenInfo(bytes(r[0]).hex()[:TOKEN_ID_CHARS], r[1], r[2]) for r in rows]

    async def withdraw_token(self, token_id: str) -> TokenInfo:
        """Delete the token whose id (as `tokens` lists it) is `token_id`."""
        wanted = token_id.strip().lower()
        matches = [t for t in await self.tokens() if t.id == wanted]
        if not matches:
            raise OperatorError(f"no API token with id {token_id!r}; see 'simpul token list'")
        async with self.db.write() as conn:
            await conn.execute(
                "DELETE FROM tokens WHERE substr(lower(hex(token_hash)), 1, ?) = ?",
                (TOKEN_ID_CHARS, wanted),
            )
        return matches[0]


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise OperatorError(f"password must have at least {MIN_PASSWORD} characters")
