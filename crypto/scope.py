"""Write scope: the region codes (kode wilayah) a node may author records for.

A scope is a set of digit prefixes of Kemendagri region codes: `17` a province, `1709` a
kabupaten, `170904` a kecamatan, `1709042001` a village. A record is in scope when its
region code starts with one of the prefixes. Dotted forms (`17.09.04.2001`) are accepted
and compared without the dots. An empty scope writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_PREFIX_DIGITS = 10
_PREFIX = re.compile(rf"[0-9]{{1,{MAX_PREFIX_DIGITS}}}")


def _digits(code: str) -> str:
    return code.replace(".", "")


def normalise_scope(scope: Iterable[str]) -> tuple[str, ...]:
    """The scope as sorted, de-duplicated digit prefixes; ValueError on anything else."""
    if isinstance(scope, str):
        raise ValueError("scope must be a list of region-code prefixes, not one string")
    prefixes = set()
    for item in scope:
        prefix = _digits(item) if isinstance(item, str) else ""
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"invalid region-code prefix in scope: {item!r}")
        prefixes.add(prefix)
    return tuple(sorted(prefixes))


def in_scope(scope: Iterable[str], kode_wilayah: str) -> bool:
    """True when the region code `kode_wilayah` starts with one of the scope's prefixes."""
    code = _digits(kode_wilayah)
    if not code.isdigit() or not code.isascii():
        return False
    return any(code.startswith(_digits(prefix)) for prefix in scope)


def covers(outer: Iterable[str], inner: Iterable[str]) -> bool:
    """True when every prefix of `inner` lies inside `outer` (a node inside its network)."""
    outer = tuple(outer)
    return all(in_scope(outer, prefix) for prefix in inner)
