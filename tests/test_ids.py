"""Record ids as text: the fast conversion agrees with the standard library's."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpul.sync.ids import record_id_text, uuid7


@given(st.binary(min_size=16, max_size=16))
def test_record_id_text_is_the_canonical_uuid_text(raw: bytes) -> None:
    assert record_id_text(raw) == str(uuid.UUID(bytes=raw))


def test_record_id_text_round_trips_a_new_record_id() -> None:
    rid = uuid7()
    assert record_id_text(rid.bytes) == str(rid)


@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_record_id_text_refuses_other_lengths(size: int) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        record_id_text(bytes(size))
