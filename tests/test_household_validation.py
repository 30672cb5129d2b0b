"""Tests for simpul.sync.household: every rule with a passing and a failing case."""

from __future__ import annotations

import copy
from datetime import date, timedelta

import pytest

from simpul.sync.household import (
    ATAP,
    DINDING,
    HOUSEHOLD_FIELDS,
    HUBUNGAN,
    LANTAI,
    MEMBER_FIELDS,
    STATUS_USULAN,
    SUMBER_AIR,
    FieldError,
    ValidationError,
    validate_fields,
    validate_household,
    validate_member,
)

HOUSEHOLD_ID = "af2529ca-d670-4838-a054-fa816e7c0c6a"


def man() -> dict:
    return {
        "nik": "1709092103889682",
        "nama": "RUDI KURNIAWAN",
        "tanggal_lahir": "1988-03-21",
        "jenis_kelamin": "L",
        "hubungan": "Kepala Keluarga",
        "pekerjaan": "Petani",
    }


def woman() -> dict:
    return {
        "nik": "1709094303879866",
        "nama": "ROHANI SETIAWAN",
        "tanggal_lahir": "1987-03-03",
        "jenis_kelamin": "P",
        "hubungan": "Istri",
        "pekerjaan": "Mengurus Rumah Tangga",
    }


def household() -> dict:
    return {
        "id": HOUSEHOLD_ID,
        "kode_wilayah": "1709092013",
        "no_kk": "1709092001089854",
        "dusun": "Mekarsari",
        "rt": "002",
        "rw": "003",
        "alamat": "Jl. Anggrek No. 112",
        "desil": 3,
        "status_usulan": "diverifikasi",
        "rumah": {
            "lantai": "Keramik",
            "dinding": "Kayu/Papan",
            "atap": "Ijuk/Rumbia",
            "sumber_air": "Air Hujan",
        },
        "program": ["BLT_DD", "PBI_JKN"],
        "anggota": [man(), woman()],
    }


def errors_of(fn, *args, **kwargs) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        fn(*args, **kwargs)
    assert info.value.errors, "a ValidationError must carry at least one FieldError"
    return info.value.errors


def fields_of(errors: list[FieldError]) -> set[str]:
    return {e.field for e in errors}


def nik_for(born: date, *, female: bool) -> str:
    day = born.day + 40 if female else born.day
    return f"170909{day:02d}{born.month:02d}{born.year % 100:02d}9001"


# --- whole household ---------------------------------------------------------------------


def test_valid_household_comes_back_equal_and_as_a_new_dict() -> None:
    data = household()
    original = copy.deepcopy(data)
    result = validate_household(data)
    assert result == original
    assert result is not data
    assert data == original


def test_household_id_is_kept_in_canonical_form() -> None:
    data = household()
    data["id"] = HOUSEHOLD_ID.upper()
    assert validate_household(data)["id"] == HOUSEHOLD_ID


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "", 42])
def test_household_id_that_is_not_a_uuid_is_an_error(bad_id: object) -> None:
    data = household()
    data["id"] = bad_id
    with pytest.raises(ValidationError) as caught:
        validate_household(data)
    assert [e.field for e in caught.value.errors] == ["id"]


def test_household_id_null_means_no_id() -> None:
    data = household()
    data["id"] = None
    assert "id" not in validate_household(data)


def test_household_without_id_has_no_id() -> None:
    data = household()
    del data["id"]
    assert "id" not in validate_household(data)


@pytest.mark.parametrize("data", [[], "x", 3, None])
def test_household_that_is_not_an_object_is_a_field_error(data: object) -> None:
    assert fields_of(errors_of(validate_household, data)) == {""}


@pytest.mark.parametrize("missing", HOUSEHOLD_FIELDS)
def test_every_household_field_is_required(missing: str) -> None:
    data = household()
    del data[missing]
    assert FieldError(missing, "is required") in errors_of(validate_household, data)


def test_unknown_household_field_is_an_error() -> None:
    data = household()
    data["nomor_rumah"] = "12"
    assert fields_of(errors_of(validate_household, data)) == {"nomor_rumah"}


def test_all_problems_are_reported_not_just_the_first() -> None:
    data = household()
    data["no_kk"] = "123"
    data["rumah"]["atap"] = "Emas"
    data["anggota"][1]["nik"] = "12"
    assert fields_of(errors_of(validate_household, data)) == {
        "no_kk",
        "rumah.atap",
        "anggota[1].nik",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("no_kk", 1709092001089854),
        ("kode_wilayah", ["1709092013"]),
        ("dusun", None),
        ("rt", 2),
        ("desil", {"value": 3}),
        ("status_usulan", True),
        ("rumah", ["Keramik"]),
        ("program", "PKH"),
        ("anggota", {"0": man()}),
    ],
)
def test_wrong_json_types_are_field_errors(field: str, value: object) -> None:
    data = household()
    data[field] = value
    assert field in fields_of(errors_of(validate_household, data))


@pytest.mark.parametrize(
    ("field", "value"),
    [("no_kk", "1709092001089854"), ("no_kk", " 1709092001089854 ")],
)
def test_no_kk_of_16_digits_passes(field: str, value: str) -> None:
    data = household()
    data[field] = value
    assert validate_household(data)[field] == "1709092001089854"


@pytest.mark.parametrize("value", ["170909200108985", "17090920010898541", "17090920010898AB", ""])
def test_no_kk_must_be_16_digits(value: str) -> None:
    data = household()
    data["no_kk"] = value
    assert fields_of(errors_of(validate_household, data)) == {"no_kk"}


@pytest.mark.parametrize("value", ["170909201", "17090920130", "17.09.09.2013"])
def test_kode_wilayah_must_be_10_digits(value: str) -> None:
    data = household()
    data["kode_wilayah"] = value
    assert fields_of(errors_of(validate_household, data)) == {"kode_wilayah"}


@pytest.mark.parametrize(("value", "expected"), [("2", "002"), ("15", "015"), ("120", "120")])
@pytest.mark.parametrize("field", ["rt", "rw"])
def test_rt_rw_are_padded_to_3_digits(field: str, value: str, expected: str) -> None:
    data = household()
    data[field] = value
    assert validate_household(data)[field] == expected


@pytest.mark.parametrize("value", ["1234", "", "2a", "-1"])
@pytest.mark.parametrize("field", ["rt", "rw"])
def test_rt_rw_must_be_1_to_3_digits(field: str, value: str) -> None:
    data = household()
    data[field] = value
    assert fields_of(errors_of(validate_household, data)) == {field}


@pytest.mark.parametrize("value", [1, 10])
def test_desil_from_1_to_10_passes(value: int) -> None:
    data = household()
    data["desil"] = value
    assert validate_household(data)["desil"] == value


@pytest.mark.parametrize("value", [0, 11, "3", 3.0, True])
def test_desil_must_be_an_int_from_1_to_10(value: object) -> None:
    data = household()
    data["desil"] = value
    assert fields_of(errors_of(validate_household, data)) == {"desil"}


@pytest.mark.parametrize("value", STATUS_USULAN)
def test_every_status_usulan_passes(value: str) -> None:
    data = household()
    data["status_usulan"] = value
    assert validate_household(data)["status_usulan"] == value


def test_status_usulan_is_matched_case_insensitively() -> None:
    data = household()
    data["status_usulan"] = " DIKEMBALIKAN "
    assert validate_household(data)["status_usulan"] == "dikembalikan"


def test_unknown_status_usulan_fails() -> None:
    data = household()
    data["status_usulan"] = "baru"
    assert fields_of(errors_of(validate_household, data)) == {"status_usulan"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["SEMBAKO", "PKH", "BLT_DD", "PBI_JKN"], ["BLT_DD", "PBI_JKN", "PKH", "SEMBAKO"]),
        (["pkh"], ["PKH"]),
        ([], []),
    ],
)
def test_program_is_returned_sorted_and_canonical(value: list, expected: list) -> None:
    data = household()
    data["program"] = value
    assert validate_household(data)["program"] == expected


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (["PKH", "PKH"], "program[1]"),
        (["PKH", "BANSOS"], "program[1]"),
        ([7], "program[0]"),
        ("PKH", "program"),
    ],
)
def test_program_must_be_distinct_known_values(value: object, field: str) -> None:
    data = household()
    data["program"] = value
    assert fields_of(errors_of(validate_household, data)) == {field}


@pytest.mark.parametrize(
    ("field", "options"),
    [("lantai", LANTAI), ("dinding", DINDING), ("atap", ATAP), ("sumber_air", SUMBER_AIR)],
)
def test_rumah_values_match_case_insensitively_to_canonical(
    field: str, options: tuple[str, ...]
) -> None:
    for option in options:
        data = household()
        data["rumah"][field] = f"  {option.upper()} "
        assert validate_household(data)["rumah"][field] == option


@pytest.mark.parametrize("field", ["lantai", "dinding", "atap", "sumber_air"])
def test_rumah_unknown_value_fails(field: str) -> None:
    data = household()
    data["rumah"][field] = "Marmer"
    assert fields_of(errors_of(validate_household, data)) == {f"rumah.{field}"}


def test_rumah_needs_every_field_and_no_other() -> None:
    data = household()
    del data["rumah"]["atap"]
    data["rumah"]["pagar"] = "Bambu"
    assert fields_of(errors_of(validate_household, data)) == {"rumah.atap", "rumah.pagar"}


@pytest.mark.parametrize("field", ["alamat", "dusun"])
def test_text_fields_are_stripped_and_limited_to_200(field: str) -> None:
    data = household()
    data[field] = "  " + "x" * 200 + "  "
    assert validate_household(data)[field] == "x" * 200
    data[field] = "x" * 201
    assert fields_of(errors_of(validate_household, data)) == {field}
    data[field] = "   "
    assert fields_of(errors_of(validate_household, data)) == {field}


def test_household_needs_at_least_one_member() -> None:
    data = household()
    data["anggota"] = []
    assert fields_of(errors_of(validate_household, data)) == {"anggota"}


def test_member_that_is_not_an_object_is_an_error() -> None:
    data = household()
    data["anggota"][1] = "ROHANI"
    assert fields_of(errors_of(validate_household, data)) == {"anggota[1]"}


@pytest.mark.parametrize("heads", [0, 2])
def test_number_of_kepala_keluarga_is_not_enforced(heads: int) -> None:
    data = household()
    data["anggota"][0]["hubungan"] = "Kepala Keluarga" if heads else "Famili Lain"
    data["anggota"][1]["hubungan"] = "Kepala Keluarga" if heads == 2 else "Istri"
    assert len(validate_household(data)["anggota"]) == 2


def test_member_niks_must_be_distinct_within_a_household() -> None:
    data = household()
    data["anggota"].append(man())
    errors = errors_of(validate_household, data)
    assert fields_of(errors) == {"anggota[2].nik"}
    assert "anggota[0]" in errors[0].message


# --- members --------------------------------------------------------------------------------


def test_valid_members_pass() -> None:
    assert validate_member(man()) == man()
    assert validate_member(woman()) == woman()


@pytest.mark.parametrize("missing", MEMBER_FIELDS)
def test_every_member_field_is_required(missing: str) -> None:
    data = man()
    del data[missing]
    assert FieldError(missing, "is required") in errors_of(validate_member, data)


def test_unknown_member_field_is_an_error() -> None:
    data = man()
    data["agama"] = "Islam"
    assert fields_of(errors_of(validate_member, data)) == {"agama"}


@pytest.mark.parametrize("value", ["170909210388968", "17090921038896821", "170909210388968X"])
def test_nik_must_be_16_digits(value: str) -> None:
    data = man()
    data["nik"] = value
    assert fields_of(errors_of(validate_member, data)) == {"nik"}


@pytest.mark.parametrize(
    "nik_date",
    [
        "000388",  # day 00
        "320388",  # day 32 is neither a man's nor a woman's day
        "400388",
        "720388",  # woman's day beyond 71
        "211388",  # month 13
        "310488",  # 31 April
        "300288",  # 30 February
        "290201",  # 29 February in a non-leap year (1901 and 2001)
    ],
)
def test_nik_date_part_must_be_a_real_date(nik_date: str) -> None:
    data = man()
    del data["tanggal_lahir"]
    del data["jenis_kelamin"]
    data["nik"] = f"170909{nik_date}9682"
    errors = errors_of(validate_member, data, partial=True)
    assert fields_of(errors) == {"nik"}


@pytest.mark.parametrize("nik_date", ["010188", "310188", "410188", "710188", "290200"])
def test_nik_date_part_real_dates_pass_for_men_and_women(nik_date: str) -> None:
    nik = f"170909{nik_date}9682"
    assert validate_member({"nik": nik}, partial=True) == {"nik": nik}


def test_women_nik_day_is_plus_40() -> None:
    data = woman()
    born = date.fromisoformat(data["tanggal_lahir"])
    data["nik"] = nik_for(born, female=True)
    assert validate_member(data)["nik"][6:8] == f"{born.day + 40:02d}"


def test_nik_of_a_woman_with_jenis_kelamin_l_fails() -> None:
    data = woman()
    data["jenis_kelamin"] = "L"
    errors = errors_of(validate_member, data)
    assert fields_of(errors) == {"nik"}
    assert "woman" in errors[0].message
    assert "jenis_kelamin is L" in errors[0].message


def test_nik_of_a_man_with_jenis_kelamin_p_fails() -> None:
    data = man()
    data["jenis_kelamin"] = "P"
    errors = errors_of(validate_member, data)
    assert "man" in errors[0].message
    assert "jenis_kelamin is P" in errors[0].message


@pytest.mark.parametrize("tanggal_lahir", ["1988-03-22", "1988-04-21", "1987-03-21", "1978-03-21"])
def test_nik_date_must_agree_with_tanggal_lahir(tanggal_lahir: str) -> None:
    data = man()
    data["tanggal_lahir"] = tanggal_lahir
    errors = errors_of(validate_member, data)
    assert fields_of(errors) == {"nik"}
    assert tanggal_lahir in errors[0].message
    assert "21-03-88" in errors[0].message


def test_nik_date_agrees_with_a_century_other_than_1900() -> None:
    born = date(2014, 8, 9)
    data = woman()
    data["tanggal_lahir"] = born.isoformat()
    data["nik"] = nik_for(born, female=True)
    assert validate_member(data)["tanggal_lahir"] == "2014-08-09"


@pytest.mark.parametrize("tanggal_lahir", ["21/03/1988", "1988-3-21", "1988-02-30", "19880321"])
def test_tanggal_lahir_must_be_a_real_iso_date(tanggal_lahir: str) -> None:
    data = man()
    data["tanggal_lahir"] = tanggal_lahir
    assert fields_of(errors_of(validate_member, data)) == {"tanggal_lahir"}


def test_tanggal_lahir_today_passes_and_tomorrow_fails() -> None:
    today = date.today()
    data = man()
    data["tanggal_lahir"] = today.isoformat()
    data["nik"] = nik_for(today, female=False)
    assert validate_member(data)["tanggal_lahir"] == today.isoformat()
    tomorrow = today + timedelta(days=1)
    data["tanggal_lahir"] = tomorrow.isoformat()
    data["nik"] = nik_for(tomorrow, female=False)
    errors = errors_of(validate_member, data)
    assert fields_of(errors) == {"tanggal_lahir"}
    assert "future" in errors[0].message


@pytest.mark.parametrize(("value", "expected"), [("L", "L"), ("l", "L"), (" P ", "P")])
def test_jenis_kelamin_l_or_p(value: str, expected: str) -> None:
    data = {"jenis_kelamin": value}
    assert validate_member(data, partial=True) == {"jenis_kelamin": expected}


@pytest.mark.parametrize("value", ["X", "", "Laki-laki", 1])
def test_jenis_kelamin_other_values_fail(value: object) -> None:
    assert fields_of(errors_of(validate_member, {"jenis_kelamin": value}, partial=True)) == {
        "jenis_kelamin"
    }


@pytest.mark.parametrize("value", HUBUNGAN)
def test_every_hubungan_passes(value: str) -> None:
    assert validate_member({"hubungan": value.lower()}, partial=True) == {"hubungan": value}


@pytest.mark.parametrize("value", ["Ayah", "Kepala", ""])
def test_unknown_hubungan_fails(value: str) -> None:
    assert fields_of(errors_of(validate_member, {"hubungan": value}, partial=True)) == {"hubungan"}


def test_nama_is_stripped_and_upper_cased() -> None:
    assert validate_member({"nama": "  José Muñoz "}, partial=True) == {"nama": "JOSÉ MUÑOZ"}
    assert validate_member({"nama": "a" * 100}, partial=True) == {"nama": "A" * 100}


@pytest.mark.parametrize("value", ["", "   ", "a" * 101, 12, None])
def test_nama_must_be_a_non_empty_string_of_at_most_100(value: object) -> None:
    assert fields_of(errors_of(validate_member, {"nama": value}, partial=True)) == {"nama"}


def test_pekerjaan_is_stripped_and_limited_to_200() -> None:
    assert validate_member({"pekerjaan": " Petani "}, partial=True) == {"pekerjaan": "Petani"}
    for value in ("", "x" * 201, ["Petani"]):
        errors = errors_of(validate_member, {"pekerjaan": value}, partial=True)
        assert fields_of(errors) == {"pekerjaan"}


@pytest.mark.parametrize("member_id", ["a", "m_01-XyZ", "x" * 32])
def test_valid_member_id_is_passed_through(member_id: str) -> None:
    data = man()
    data["id"] = member_id
    assert validate_member(data)["id"] == member_id


@pytest.mark.parametrize("member_id", ["", "x" * 33, "a b", "a/b", 7, None])
def test_invalid_member_id_is_left_out(member_id: object) -> None:
    data = man()
    data["id"] = member_id
    assert "id" not in validate_member(data)


def test_member_id_survives_inside_a_household() -> None:
    data = household()
    data["anggota"][0]["id"] = "m1"
    assert validate_household(data)["anggota"][0]["id"] == "m1"


def test_member_errors_inside_a_household_have_indexed_paths() -> None:
    data = household()
    data["anggota"][1]["jenis_kelamin"] = "X"
    assert fields_of(errors_of(validate_household, data)) == {"anggota[1].jenis_kelamin"}


@pytest.mark.parametrize("data", [[], "RUDI", None])
def test_member_that_is_not_an_object_fails(data: object) -> None:
    assert fields_of(errors_of(validate_member, data)) == {""}


def test_partial_member_allows_a_subset() -> None:
    assert validate_member({"nama": "budi", "pekerjaan": "Guru"}, partial=True) == {
        "nama": "BUDI",
        "pekerjaan": "Guru",
    }
    assert validate_member({}, partial=True) == {}


def test_partial_member_still_checks_what_it_has() -> None:
    data = {"nik": man()["nik"], "jenis_kelamin": "P", "foo": 1}
    assert fields_of(errors_of(validate_member, data, partial=True)) == {"foo"}
    del data["foo"]
    assert fields_of(errors_of(validate_member, data, partial=True)) == {"nik"}


# --- partial top-level updates ----------------------------------------------------------------


def test_fields_update_accepts_a_subset_and_normalises() -> None:
    assert validate_fields({"rt": "7", "program": ["PKH", "BLT_DD"], "desil": 2}) == {
        "rt": "007",
        "program": ["BLT_DD", "PKH"],
        "desil": 2,
    }
    assert validate_fields({}) == {}


@pytest.mark.parametrize("key", ["anggota", "id", "nomor_rumah"])
def test_fields_update_rejects_members_id_and_unknown_keys(key: str) -> None:
    assert fields_of(errors_of(validate_fields, {key: "x", "rt": "1"})) == {key}


def test_fields_update_applies_the_same_rules() -> None:
    errors = errors_of(validate_fields, {"no_kk": "12", "desil": "3", "rumah": {"lantai": "Tanah"}})
    assert fields_of(errors) == {
        "no_kk",
        "desil",
        "rumah.dinding",
        "rumah.atap",
        "rumah.sumber_air",
    }


@pytest.mark.parametrize("data", [["rt"], "rt=1", None])
def test_fields_update_that_is_not_an_object_fails(data: object) -> None:
    assert fields_of(errors_of(validate_fields, data)) == {""}


def test_validation_error_message_lists_the_fields() -> None:
    data = household()
    data["no_kk"] = "1"
    data["rt"] = "abcd"
    with pytest.raises(ValidationError) as info:
        validate_household(data)
    assert "no_kk:" in str(info.value)
    assert "rt:" in str(info.value)
