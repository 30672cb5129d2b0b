"""Conflicts made visible: fields two nodes changed concurrently, with every competing value.

Automerge resolves a concurrent write to the same field deterministically and keeps the
losing values until someone writes the field again. The bindings expose which fields are
in that state only through `Document.diff` patches (their `conflict` flag, read from the
patch text of the pinned automerge 1.0.0rc1), so this module finds the conflicted fields
there, then finds in the history the concurrent changes that wrote each one: their
values, operators, nodes and times. A verifier's choice is a new change that writes the
field again with both competing changes as ancestors, which clears the conflict on every
node that receives it. Concurrent writes to different fields or members never conflict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from automerge import core

from simpul.sync.record_doc import (
    AUDIT_AT,
    AUDIT_BY,
    INTERNAL_KEYS,
    MEMBERS,
    RecordDoc,
    extract,
    iso_ms,
)

# A field path: ("desil",), ("rumah", "atap") or ("anggota", member_id, "nama").
Path = tuple[str, ...]

_PUT = re.compile(r'PutMap \{ key: "([^"]*)", .*conflict: true \}')
_STEP = re.compile(r'Map\("([^"]*)"\)|Seq\((\d+)\)')
_FIELD = re.compile(r"^(?:anggota\[([A-Za-z0-9_-]+)\]\.(\w+)|(\w+)(?:\.(\w+))?)$")


class UnknownField(ValueError):
    """A field name that does not name a field of this record."""


def field_name(path: Path) -> str:
    if path[0] == MEMBERS:
        return f"{MEMBERS}[{path[1]}].{path[2]}"
    return ".".join(path)


def parse_field(name: str) -> Path:
    """The path of "desil", "rumah.atap" or "anggota[MEMBER_ID].nama"."""
    match = _FIELD.match(name)
    if match is None:
        raise UnknownField(f"{name!r} is not a field name")
    member, member_field, top, nested = match.groups()
    if member:
        return (MEMBERS, member, member_field)
    return (top, nested) if nested else (top,)


def _object(doc: core.Document, obj: bytes, key: str | int, heads: list[bytes] | None):
    got = doc.get(obj, key, heads)
    if got is None or not isinstance(got[0], core.ObjType):
        return None
    return got[1]


def _member_index(doc: core.Document, members: bytes, member_id: str, heads) -> int | None:
    for index in range(doc.length(members, heads)):
        member = _object(doc, members, index, heads)
        got = doc.get(member, "id", heads) if member else None
        if got is not None and got[0][1] == member_id:
            return index
    return None


def locate(doc: core.Document, path: Path, heads: list[bytes] | None) -> tuple[bytes, str] | None:
    """The (object id, key) holding `path` at `heads` (None: now), or None if absent."""
    if len(path) == 1:
        return core.ROOT, path[0]
    container = _object(doc, core.ROOT, path[0], heads)
    if container is None:
        return None
    if path[0] == MEMBERS:
        index = _member_index(doc, container, path[1], heads)
        member = _object(doc, container, index, heads) if index is not None else None
        return (member, path[2]) if member is not None else None
    return container, path[1]


def value_at(doc: core.Document, path: Path, heads: list[bytes] | None) -> Any:
    where = locate(doc, path, heads)
    got = doc.get(where[0], where[1], heads) if where else None
    if got is None:
        return None
    if not isinstance(got[0], core.ObjType):
        return got[0][1]
    return extract(doc.fork(heads), got[1], got[0])


def conflicted_paths(doc: core.Document) -> list[Path]:
    """Fields whose current value hides a concurrent one (audit keys excluded)."""
    plain: dict[str, Any] | None = None
    paths = []
    for patch in doc.diff([], doc.get_heads()):
        text = repr(patch)
        put = _PUT.search(text)
        if put is None:
            continue
        steps = [m if m else int(i) for m, i in _STEP.findall(text[: put.start()])]
        key = put.group(1)
        if not steps:
            if key not in INTERNAL_KEYS:
                paths.append((key,))
        elif steps[0] == MEMBERS and len(steps) == 2:
            plain = plain or extract(doc)
            assert plain is not None
            paths.append((MEMBERS, plain[MEMBERS][steps[1]]["id"], key))
        elif len(steps) == 1:
            paths.append((str(steps[0]), key))
    return paths


@dataclass(frozen=True)
class Competitor:
    """One competing value of a conflicted field and who wrote it."""

    value: Any
    operator: str | None
    node: str
    at: str | None
    change: str


def _ancestors(changes: list[core.Change]) -> dict[bytes, set[bytes]]:
    result: dict[bytes, set[bytes]] = {}
    for change in changes:  # causal order: deps come first
        seen: set[bytes] = set()
        for dep in change.deps:
            seen.add(dep)
            seen |= result.get(dep, set())
        result[change.hash] = seen
    return result


def is_linear(changes: list[core.Change]) -> bool:
    """True when every change builds on the one before: no concurrency, no conflict."""
    previous: list[bytes] = []
    for change in changes:
        if list(change.deps) != previous:
            return False
        previous = [change.hash]
    return True


def competitors(record: RecordDoc, path: Path) -> list[Competitor]:
    """The concurrent latest writes of `path`, one per competing change."""
    doc = record.doc
    changes = record.changes()
    ancestors = _ancestors(changes)
    writers = [
        c
        for c in changes
        if value_at(doc, path, [c.hash]) != (value_at(doc, path, list(c.deps)) if c.deps else None)
    ]
    latest = sorted(
        (w for w in writers if not any(w.hash in ancestors[o.hash] for o in writers)),
        key=lambda w: w.hash,  # the same order on every node
    )
    return [
        Competitor(
            value=value_at(doc, path, [w.hash]),
            operator=value_at(doc, (AUDIT_BY,), [w.hash]),
            node=w.actor_id.hex(),
            at=iso_ms(value_at(doc, (AUDIT_AT,), [w.hash])),
            change=w.hash.hex(),
        )
        for w in latest
    ]


def conflicts(record: RecordDoc) -> list[dict[str, Any]]:
    """`_meta.conflicts`: each conflicted field with its (two or more) competing values."""
    if is_linear(record.changes()):
        return []
    found = []
    for path in conflicted_paths(record.doc):
        competing = competitors(record, path)
        if len({repr(c.value) for c in competing}) > 1:
            found.append({"field": field_name(path), "values": [c.__dict__ for c in competing]})
    return found


def resolve(
    record: RecordDoc, path: Path, value: Any, operator: str, at_ms: int
) -> list[core.Change]:
    """Write `path` again (even with the current value): the verifier's choice wins."""
    where = locate(record.doc, path, None)
    if where is None:
        raise UnknownField(f"{field_name(path)} is not a field of this record")
    return record.put(where[0], where[1], value, operator, at_ms)
