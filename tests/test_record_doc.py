"""Household documents: minimal changes, and concurrent edits that must merge without loss."""

from __future__ import annotations

import copy
from typing import Any

from automerge import core

from simpul.sync.ids import new_member_id
from simpul.sync.record_doc import RecordDoc

NODE_A = bytes.fromhex("0a" * 16)
NODE_B = bytes.fromhex("0b" * 16)


def with_ids(household: dict[str, Any]) -> dict[str, Any]:
    target = {k: v for k, v in copy.deepcopy(household).items() if k != "id"}
    for member in target["anggota"]:
        member["id"] = new_member_id()
    return target


def fork(doc: RecordDoc, actor: bytes) -> RecordDoc:
    return RecordDoc.load(doc.save(), actor)


def merged(a: RecordDoc, b: RecordDoc) -> RecordDoc:
    """Apply b's changes to a copy of a the way the store does: saved doc + raw changes."""
    raw = b"".join(c.raw_bytes for c in b.changes())
    return RecordDoc(core.Document.load(a.save() + raw))


def test_unchanged_state_writes_no_change(households_jsonl: list) -> None:
    doc = RecordDoc.new(NODE_A)
    target = with_ids(households_jsonl[0])
    assert len(doc.set_state(target, "op", 1)) == 1
    assert doc.set_state(target, "op", 2) == []
    assert doc.household() == target


def test_concurrent_edits_to_different_members_merge(households_jsonl: list) -> None:
    household = next(h for h in households_jsonl if len(h["anggota"]) >= 2)
    base = RecordDoc.new(NODE_A)
    target = with_ids(household)
    base.set_state(target, "op", 1)
    a, b = fork(base, NODE_A), fork(base, NODE_B)
    on_a = copy.deepcopy(target)
    on_a["anggota"][0]["pekerjaan"] = "Nelayan"
    on_b = copy.deepcopy(target)
    on_b["anggota"][1]["nama"] = "NAMA DIPERBAIKI"
    a.set_state(on_a, "ani", 2)
    b.set_state(on_b, "budi", 3)
    both = merged(a, b)
    result = both.household()
    assert result["anggota"][0]["pekerjaan"] == "Nelayan"
    assert result["anggota"][1]["nama"] == "NAMA DIPERBAIKI"
    assert merged(b, a).heads == both.heads


def test_concurrent_member_adds_and_field_edits_all_survive(households_jsonl: list) -> None:
    base = RecordDoc.new(NODE_A)
    target = with_ids(households_jsonl[1])
    base.set_state(target, "op", 1)
    a, b = fork(base, NODE_A), fork(base, NODE_B)
    extra = dict(target["anggota"][0], id=new_member_id(), nama="ANAK A", nik="1" * 16)
    a.set_state({**target, "anggota": [*target["anggota"], extra], "desil": 1}, "ani", 2)
    other = dict(target["anggota"][0], id=new_member_id(), nama="ANAK B", nik="2" * 16)
    b.set_state({**target, "anggota": [*target["anggota"], other], "alamat": "Jl. Baru"}, "b", 3)
    result = merged(a, b).household()
    names = {m["nama"] for m in result["anggota"]}
    assert {"ANAK A", "ANAK B"} <= names
    assert result["desil"] == 1 and result["alamat"] == "Jl. Baru"


def test_history_lists_operator_node_and_fields(households_jsonl: list) -> None:
    doc = RecordDoc.new(NODE_A)
    target = with_ids(households_jsonl[2])
    doc.set_state(target, "ani", 1000)
    doc.set_state({**target, "rumah": {**target["rumah"], "atap": "Beton"}}, "budi", 2000)
    first, second = doc.history()
    assert (first.operator, first.at_ms, first.actor) == ("ani", 1000, NODE_A)
    assert (second.operator, second.fields) == ("budi", ["rumah"])
