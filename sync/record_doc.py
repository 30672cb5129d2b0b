"""One household as an Automerge document: write a target state as minimal changes, read it back.

Layout of the document root: every household field of the shared record shape, with
`rumah` a map (so different house fields merge), `program` a list of strings, `anggota`
a list of member maps each carrying a stable short `id` (so edits to different members
merge). Each photo of the house is a root key of its own, `foto_<first 16 hex of its
SHA-256>`, holding a map of its reference (sync/photos.py): photos added on two nodes at
once are two keys and merge; one photo touched on both is a conflict like any field; a
removal deletes its key. Outside the document, the photo keys are folded into one
`foto` field (hash -> reference), which `set_state` rewrites only when the target names
it. Every change also sets `_by` (operator username) and `_at` (Unix ms), so the
audit trail is inside the change and covered by its hash; `_deleted` marks a tombstone.
The node is the Automerge actor (its 16-byte node id).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from automerge import core

AUDIT_BY = "_by"
AUDIT_AT = "_at"
TOMBSTONE = "_deleted"
INTERNAL_KEYS = (AUDIT_BY, AUDIT_AT, TOMBSTONE)
MEMBERS = "anggota"
PHOTOS = "foto"
PHOTO_PREFIX = "foto_"
PHOTO_KEY_HEX = 16


def photo_key(digest: str) -> str:
    """The root key of the photo whose SHA-256 (hex) is `digest`."""
    return PHOTO_PREFIX + digest[:PHOTO_KEY_HEX]


def is_photo_key(key: str) -> bool:
    return key.startswith(PHOTO_PREFIX)


def fold_photos(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Document fields with the photo keys folded into `foto` (hash -> reference)."""
    result = {k: v for k, v in fields.items() if not is_photo_key(k)}
    photos = {
        v["hash"]: v
        for k, v in fields.items()
        if is_photo_key(k) and isinstance(v, dict) and isinstance(v.get("hash"), str)
    }
    if photos:
        result[PHOTOS] = dict(sorted(photos.items()))
    return result


class RecordDocError(Exception):
    """Stored document bytes that cannot be loaded, or a change whose deps are missing."""


_SCALAR_TYPES: dict[type, core.ScalarType] = {
    str: core.ScalarType.Str,
    int: core.ScalarType.Int,
    bool: core.ScalarType.Boolean,
    float: core.ScalarType.F64,
    type(None): core.ScalarType.Null,
}


def _write(tx: core.Transaction, obj: bytes, key: str | int, value: Any, insert: bool) -> None:
    """Put (or insert, in a list) `value` at `key`, creating nested maps and lists."""
    scalar = _SCALAR_TYPES.get(type(value))
    if scalar is not None:
        if insert:
            tx.insert(obj, int(key), scalar, value)
        else:
            tx.put(obj, key, scalar, value)
        return
    if isinstance(value, dict):
        child = (
            tx.insert_object(obj, int(key), core.ObjType.Map)
            if insert
            else tx.put_object(obj, key, core.ObjType.Map)
        )
        for k, v in value.items():
            _write(tx, child, k, v, insert=False)
    elif isinstance(value, list):
        child = (
            tx.insert_object(obj, int(key), core.ObjType.List)
            if insert
            else tx.put_object(obj, key, core.ObjType.List)
        )
        for i, v in enumerate(value):
            _write(tx, child, i, v, insert=True)
    else:
        raise TypeError(f"unsupported value type {type(value).__name__}")


def extract(doc: core.Document, obj: bytes = core.ROOT, kind: Any = core.ObjType.Map) -> Any:
    """An object of `doc` as plain Python values. Like `automerge.core.extract`, but reads
    each map or list in one `values` call instead of one `get` per key (about 40% less
    time per household, which an import or a sync pays for every record)."""
    if kind == core.ObjType.Text:
        return doc.text(obj)
    values = [
        extract(doc, child, value) if isinstance(value, core.ObjType) else value[1]
        for value, child in doc.values(obj)
    ]
    return dict(zip(doc.keys(obj), values, strict=True)) if kind == core.ObjType.Map else values


def _child(doc: core.Document | core.Transaction, obj: bytes, key: str | int) -> bytes | None:
    got = doc.get(obj, key)
    if got is None or not isinstance(got[0], core.ObjType):
        return None
    return got[1]


def _sync_map(tx: core.Transaction, obj: bytes, current: Mapping, target: Mapping) -> None:
    """Make the map `obj` (whose plain value is `current`) equal to `target`, key by key."""
    for key, value in target.items():
        if key in current and current[key] == value:
            continue
        nested = _child(tx, obj, key) if isinstance(value, Mapping) else None
        if nested is not None and isinstance(current.get(key), Mapping):
            _sync_map(tx, nested, current[key], value)
        else:
            _write(tx, obj, key, value, insert=False)
    for key in current:
        if key not in target and key not in INTERNAL_KEYS:
            tx.delete(obj, key)


def _sync_members(
    tx: core.Transaction, obj: bytes, current: Sequence[Mapping], target: Sequence[Mapping]
) -> None:
    """Edit the member list in place: update by id, append new ids, delete vanished ids."""
    wanted = {m["id"]: m for m in target}
    for index in range(len(current) - 1, -1, -1):
        if current[index]["id"] not in wanted:
            tx.delete(obj, index)
    kept = [m for m in current if m["id"] in wanted]
    position = {m["id"]: i for i, m in enumerate(kept)}
    for member in target:
        index = position.get(member["id"])
        if index is None:
            _write(tx, obj, len(position), dict(member), insert=True)
            position[member["id"]] = len(position)
        elif kept[index] != member:
            member_obj = _child(tx, obj, index)
            assert member_obj is not None
            _sync_map(tx, member_obj, kept[index], member)


@dataclass(frozen=True)
class IndexFacts:
    """What the store's search rows need of a household: its region, KK number, proposal
    status, tombstone, and each member's NIK and name."""

    kode_wilayah: str
    no_kk: str
    status_usulan: str
    deleted: bool
    members: list[tuple[str, str]]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class ChangeInfo:
    """One Automerge change of a record, as the history shows it."""

    hash: bytes
    actor: bytes
    operator: str | None
    at_ms: int | None
    fields: list[str]


class RecordDoc:
    """An Automerge household document owned by one actor (this node)."""

    def __init__(self, doc: core.Document) -> None:
        self.doc = doc
        self._plain: dict[str, Any] | None = None
        self._serialized: bytes | None = None  # bytes known to load to exactly this doc

    @classmethod
    def new(cls, actor: bytes) -> RecordDoc:
        return cls(core.Document(actor))

    @classmethod
    def load(cls, data: bytes, actor: bytes | None = None) -> RecordDoc:
        try:
            doc = core.Document.load(data)
        except Exception as exc:  # the bindings raise bare Exception
            raise RecordDocError(f"cannot load record document: {exc}") from exc
        if actor is not None:
            doc.set_actor(actor)
        record = cls(doc)
        record._serialized = data
        return record

    def save(self) -> bytes:
        """Bytes that `load` accepts. Until the document changes, the bytes it was loaded
        from (a saved document, or one followed by raw change chunks as sync appends
        them); a new document of one change is that raw chunk. Either skips a full save
        for every household an import or a sync writes; a local edit compacts."""
        if self._serialized is not None:
            return self._serialized
        return self.doc.save()

    @property
    def heads(self) -> list[bytes]:
        return self.doc.get_heads()

    def plain(self) -> dict[str, Any]:
        """The whole document as plain Python values, internal keys included.

        Read-only: callers build new values instead of mutating it. Cached after
        `set_state`, which knows the exact result of its own change; the document is
        never mutated any other way (merging loads a new RecordDoc).
        """
        if self._plain is None:
            value = extract(self.doc)
            assert isinstance(value, dict)
            self._plain = value
        return self._plain

    def set_state(
        self, target: Mapping[str, Any], operator: str, at_ms: int, deleted: bool = False
    ) -> list[core.Change]:
        """Write the minimal change that makes the household equal to `target`.

        Returns the new changes (one, or none when nothing differs). Members are matched
        by their `id`; `target` must give every member an id.
        """
        current = self.plain()
        body = {k: v for k, v in current.items() if k not in INTERNAL_KEYS}
        photos_now = {k: v for k, v in body.items() if is_photo_key(k)}
        body = {k: v for k, v in body.items() if not is_photo_key(k)}
        fields = {k: v for k, v in target.items() if k != PHOTOS}
        photos = (
            None
            if PHOTOS not in target
            else {photo_key(ref["hash"]): dict(ref) for ref in target[PHOTOS].values()}
        )
        same_photos = photos is None or photos == photos_now
        if body == fields and same_photos and bool(current.get(TOMBSTONE)) == deleted:
            return []
        before = self.heads
        with self.doc.transaction() as tx:
            _sync_map(
                tx,
                core.ROOT,
                {k: v for k, v in body.items() if k != MEMBERS},
                {k: v for k, v in fields.items() if k != MEMBERS},
            )
            if MEMBERS in fields:
                members_obj = _child(tx, core.ROOT, MEMBERS)
                if members_obj is None:
                    _write(tx, core.ROOT, MEMBERS, [dict(m) for m in fields[MEMBERS]], False)
                else:
                    _sync_members(tx, members_obj, body.get(MEMBERS, []), fields[MEMBERS])
            if photos is not None:
                _sync_map(tx, core.ROOT, photos_now, photos)
            if deleted != bool(current.get(TOMBSTONE)):
                _write(tx, core.ROOT, TOMBSTONE, deleted, insert=False)
            _write(tx, core.ROOT, AUDIT_BY, operator, insert=False)
            _write(tx, core.ROOT, AUDIT_AT, at_ms, insert=False)
        result = {**fields, **(photos_now if photos is None else photos)}
        result.update({AUDIT_BY: operator, AUDIT_AT: at_ms})
        if MEMBERS not in fields and MEMBERS in body:
            result[MEMBERS] = body[MEMBERS]
        if deleted:
            result[TOMBSTONE] = True
        self._plain = result
        changes = self.doc.get_changes(before)
        self._serialized = changes[0].raw_bytes if not before and len(changes) == 1 else None
        return changes

    def put(self, obj: bytes, key: str, value: Any, operator: str, at_ms: int) -> list[core.Change]:
        """Write one value (even an unchanged one) as a change of its own, with the audit
        keys; used to settle a conflict, where a fresh write must supersede the old ones."""
        before = self.heads
        with self.doc.transaction() as tx:
            _write(tx, obj, key, value, insert=False)
            _write(tx, core.ROOT, AUDIT_BY, operator, insert=False)
            _write(tx, core.ROOT, AUDIT_AT, at_ms, insert=False)
        self._plain = None
        self._serialized = None
        return self.doc.get_changes(before)

    def _scalar(self, obj: bytes, key: str | int) -> Any:
        got = self.doc.get(obj, key)
        if got is None or isinstance(got[0], core.ObjType):
            return None
        return got[0][1]

    def value(self, key: str) -> Any:
        """One top-level scalar field (None when absent or not a scalar), without reading
        the whole document."""
        if self._plain is not None:
            return self._plain.get(key)
        return self._scalar(core.ROOT, key)

    def index_facts(self) -> IndexFacts:
        """The facts the search rows hold, read key by key (a sync or an import indexes
        every record it touches; reading the whole document would cost twice as much)."""
        if self._plain is not None:
            plain = self._plain
            return IndexFacts(
                _text(plain.get("kode_wilayah")),
                _text(plain.get("no_kk")),
                _text(plain.get("status_usulan")),
                bool(plain.get(TOMBSTONE)),
                [(_text(m.get("nik")), _text(m.get("nama"))) for m in plain.get(MEMBERS, [])],
            )
        members = []
        members_obj = _child(self.doc, core.ROOT, MEMBERS)
        if members_obj is not None:
            for index in range(self.doc.length(members_obj)):
                member = _child(self.doc, members_obj, index)
                if member is not None:
                    nik, nama = self._scalar(member, "nik"), self._scalar(member, "nama")
                    members.append((_text(nik), _text(nama)))
        return IndexFacts(
            _text(self.value("kode_wilayah")),
            _text(self.value("no_kk")),
            _text(self.value("status_usulan")),
            bool(self.value(TOMBSTONE)),
            members,
        )

    def household(self) -> dict[str, Any]:
        """The household fields only (no audit keys), photos folded into `foto`."""
        return fold_photos({k: v for k, v in self.plain().items() if k not in INTERNAL_KEYS})

    def changes(self) -> list[core.Change]:
        return self.doc.get_changes([])

    def _value_at(self, key: str, heads: list[bytes]) -> Any:
        got = self.doc.get(core.ROOT, key, heads)
        if got is None or isinstance(got[0], core.ObjType):
            return None
        return got[0][1]

    def _plain_at(self, heads: list[bytes]) -> dict[str, Any]:
        if not heads:
            return {}
        value = extract(self.doc.fork(heads))
        assert isinstance(value, dict)
        return value

    def history(self) -> list[ChangeInfo]:
        """Every change in causal order: who, when, from which node, which fields."""
        result = []
        for change in self.changes():
            before = self._plain_at(list(change.deps))
            after = self._plain_at([change.hash])
            fields = sorted(
                k
                for k in set(before) | set(after)
                if k not in (AUDIT_BY, AUDIT_AT) and before.get(k) != after.get(k)
            )
            result.append(
                ChangeInfo(
                    hash=change.hash,
                    actor=change.actor_id,
                    operator=self._value_at(AUDIT_BY, [change.hash]),
                    at_ms=self._value_at(AUDIT_AT, [change.hash]),
                    fields=fields,
                )
            )
        return result

    def view(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The household fields and the server-side `_meta` facts (created and updated:
        when and by whom; heads; deleted), from one read of the document."""
        plain = self.plain()
        household = fold_photos({k: v for k, v in plain.items() if k not in INTERNAL_KEYS})
        changes = self.changes()
        first = [changes[0].hash] if changes else []
        meta = {
            "created_at": iso_ms(self._value_at(AUDIT_AT, first)) if first else None,
            "created_by": self._value_at(AUDIT_BY, first) if first else None,
            "updated_at": iso_ms(plain.get(AUDIT_AT)),
            "updated_by": plain.get(AUDIT_BY),
            "heads": sorted(h.hex() for h in self.heads),
            "deleted": bool(plain.get(TOMBSTONE)),
        }
        return household, meta


def iso_ms(ms: int | None) -> str | None:
    """Unix milliseconds as an ISO 8601 UTC timestamp, or None."""
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
