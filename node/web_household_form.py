"""The household form of the operator page: from posted fields to a household, and from an
edited household to the smallest JSON-API-style patch against the one the form showed.

Members travel as `anggota-I-FIELD` (I = 0..anggota_n-1) with their id hidden; a ticked
`anggota-I-hapus` removes one. Saving an edit sends only what the operator changed, so a
field someone else changed meanwhile (on this node or synced in) is not overwritten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from simpul.sync.household import MEMBER_FIELDS, RUMAH_FIELDS
from simpul.sync.record_doc import MEMBERS

TYPED_DATE = re.compile(r"(\d{1,2})[-/. ](\d{1,2})[-/. ](\d{4})")
TOP_FIELDS = ("kode_wilayah", "no_kk", "dusun", "rt", "rw", "alamat", "desil")
MAX_MEMBERS = 40
ORIGINAL = "asal"


def blank_member() -> dict[str, Any]:
    return {field: "" for field in MEMBER_FIELDS}


def blank_household() -> dict[str, Any]:
    return {
        **{field: "" for field in TOP_FIELDS},
        "program": [],
        "rumah": {field: "" for field in RUMAH_FIELDS},
        MEMBERS: [blank_member()],
    }


def iso_date(typed: str) -> str:
    """A date as operators write it (21-03-1988, 21/3/1988) in ISO form; other text as it
    is (ISO passes, anything else is left for validation to report)."""
    match = TYPED_DATE.fullmatch(typed.strip())
    if match is None:
        return typed
    day, month, year = match.groups()
    return f"{year}-{int(month):02d}-{int(day):02d}"


def _count(form: Mapping[str, Any]) -> int:
    raw = str(form.get("anggota_n", "0"))
    return min(int(raw), MAX_MEMBERS) if raw.isdigit() else 0


def household_from_form(form: Any) -> dict[str, Any]:
    """The household the form describes (members ticked for removal left out).

    Values stay as typed (validation reports what is wrong); `desil` becomes a number
    when it is one.
    """
    household: dict[str, Any] = {f: str(form.get(f, "")).strip() for f in TOP_FIELDS}
    if household["desil"].isdigit():
        household["desil"] = int(household["desil"])
    household["program"] = [str(p) for p in form.getall("program", [])]
    household["rumah"] = {f: str(form.get(f"rumah.{f}", "")) for f in RUMAH_FIELDS}
    members = []
    for index in range(_count(form)):
        prefix = f"anggota-{index}-"
        if form.get(prefix + "hapus"):
            continue
        member = {f: str(form.get(prefix + f, "")).strip() for f in MEMBER_FIELDS}
        member["tanggal_lahir"] = iso_date(member["tanggal_lahir"])
        member_id = str(form.get(prefix + "id", ""))
        members.append({"id": member_id, **member} if member_id else member)
    household[MEMBERS] = members
    return household


def original_of(form: Any) -> dict[str, Any]:
    """The household as the form showed it (hidden field), for computing the patch."""
    try:
        value = json.loads(str(form.get(ORIGINAL, "{}")))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def patch_between(original: Mapping[str, Any], edited: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH body (see node/api.py `apply_patch`) with what changed from original to
    edited; both validated households."""
    patch: dict[str, Any] = {}
    for field in (*TOP_FIELDS, "program"):
        if edited.get(field) != original.get(field):
            patch[field] = edited[field]
    old_rumah, new_rumah = original.get("rumah") or {}, edited.get("rumah") or {}
    rumah = {k: v for k, v in new_rumah.items() if old_rumah.get(k) != v}
    if rumah:
        patch["rumah"] = rumah
    before = {m["id"]: m for m in original.get(MEMBERS, []) if "id" in m}
    ops: dict[str, Any] = {}
    update = {}
    for member in edited.get(MEMBERS, []):
        if member.get("id") not in before:
            ops.setdefault("add", []).append({k: v for k, v in member.items() if k != "id"})
            continue
        old = before[member["id"]]
        changed = {k: v for k, v in member.items() if k != "id" and old.get(k) != v}
        if changed:
            update[member["id"]] = changed
    if update:
        ops["update"] = update
    kept = {m.get("id") for m in edited.get(MEMBERS, [])}
    removed = [member_id for member_id in before if member_id not in kept]
    if removed:
        ops["remove"] = removed
    if ops:
        patch[MEMBERS] = ops
    return patch


def form_errors(errors: list[Any], text: Any) -> dict[str, str]:
    """Validation errors keyed by the form's field names, in the page's language."""
    shown: dict[str, str] = {}
    for error in errors:
        name = error.field.split("[")[0] if error.field.startswith("program") else error.field
        message = text.validation(error.message)
        shown[name] = f"{shown[name]}; {message}" if name in shown else message
    return shown
