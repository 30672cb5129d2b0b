"""Households a store holds outside a write scope.

A node that joins a network with records outside the scope it is granted would bring
records no peer may accept; joining is refused while it holds any (`node/membership.py`).
Read straight from the database file (read-only), so it works while the node runs.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from simpul.crypto.scope import in_scope

MIN_GROUP_DIGITS = 4  # a kabupaten


def held_outside(db_path: Path, scope: Sequence[str]) -> Counter[str]:
    """Households (live or deleted) in `db_path` outside `scope`, counted per region
    prefix as long as the scope's longest prefix (at least a kabupaten's four digits)."""
    if not db_path.exists():
        return Counter()
    digits = max([MIN_GROUP_DIGITS, *(len(p) for p in scope)])
    uri = f"{db_path.resolve().as_uri()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        try:
            rows = conn.execute(
                "SELECT kode_wilayah, count(*) FROM records GROUP BY kode_wilayah"
            ).fetchall()
        except sqlite3.OperationalError:  # no records table yet: nothing held
            return Counter()
    outside: Counter[str] = Counter()
    for kode, count in rows:
        if not in_scope(scope, kode):
            outside[kode[:digits]] += count
    return outside


def describe(outside: Counter[str], shown: int = 5) -> str:
    """'7,214 households (1702: 3,580, 1704: 12, …)'."""
    parts = [f"{prefix}: {count:,}" for prefix, count in sorted(outside.items())[:shown]]
    if len(outside) > shown:
        parts.append("…")
    return f"{sum(outside.values()):,} households ({', '.join(parts)})"
