"""Validation and normalisation of household (keluarga) records and their members (anggota).

The one place that decides what a valid household looks like, shared by the HTTP API and the
CSV import so both apply the same rules. Pure functions over JSON-shaped values: a bad value
is reported as a `FieldError` with a dotted path ("rumah.lantai", "anggota[2].nik"); all
problems of a record are collected and raised together in one `ValidationError`, never an
exception of another kind. Valid input comes back as a new, normalised dict (strings stripped,
names upper-cased, RT/RW zero-padded, enum values in their canonical spelling, programmes
sorted).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date

MEMBER_FIELDS = ("nik", "nama", "tanggal_lahir", "jenis_kelamin", "hubungan", "pekerjaan")
RUMAH_FIELDS = ("lantai", "dinding", "atap", "sumber_air")
HOUSEHOLD_FIELDS = (
    "kode_wilayah",
    "no_kk",
    "dusun",
    "rt",
    "rw",
    "alamat",
    "desil",
    "status_usulan",
    "rumah",
    "program",
    "anggota",
)
# Fields a household may carry but need not: the reason a proposal was returned or refused.
OPTIONAL_FIELDS = ("catatan_usulan",)
# Photo references: read-only here, written through the photo endpoints (sync/photos.py).
# A whole household sent back as it was read may carry them; they are left out.
PHOTOS_FIELD = "foto"
# Fields a partial update (validate_fields) may carry: all but the members.
UPDATABLE_FIELDS = (*(f for f in HOUSEHOLD_FIELDS if f != "anggota"), *OPTIONAL_FIELDS)

STATUS_USULAN = ("draft", "diusulkan", "diverifikasi", "dikembalikan", "ditolak", "disahkan")
JENIS_KELAMIN = ("L", "P")
HUBUNGAN = (
    "Kepala Keluarga",
    "Istri",
    "Suami",
    "Anak",
    "Cucu",
    "Orang Tua",
    "Menantu",
    "Famili Lain",
    "Lainnya",
)
PROGRAMS = ("PKH", "SEMBAKO", "PBI_JKN", "BLT_DD")
LANTAI = ("Tanah", "Semen", "Keramik", "Kayu/Papan", "Bambu")
DINDING = ("Tembok", "Kayu/Papan", "Bambu", "Seng")
ATAP = ("Genteng", "Seng", "Asbes", "Ijuk/Rumbia", "Beton")
SUMBER_AIR = ("Sumur Bor", "Sumur Gali", "PDAM", "Mata Air", "Air Hujan", "Sungai")
RUMAH_CHOICES = {"lantai": LANTAI, "dinding": DINDING, "atap": ATAP, "sumber_air": SUMBER_AIR}

DESIL_MIN, DESIL_MAX = 1, 10
NAMA_MAX_LEN = 100
TEXT_MAX_LEN = 200
MEMBER_ID_MAX_LEN = 32
# Women's NIK carry their birth day + 40 (41..71).
NIK_FEMALE_DAY_OFFSET = 40

_MEMBER_ID_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{MEMBER_ID_MAX_LEN}}}")
_ISO_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_RT_RW_RE = re.compile(r"[0-9]{1,3}")


@dataclass(frozen=True)
class FieldError:
    """One problem with one field."""

    field: str  # dotted path: "no_kk", "rumah.lantai", "anggota[2].nik"; "" for the whole value
    message: str  # what is wrong and what is expected


class ValidationError(Exception):
    """A record failed validation; `errors` lists every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__(
            "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in self.errors)
        )


class _Invalid(Exception):
    """Internal: a scalar field is invalid; the argument is the message."""


_INVALID = object()  # marks a field whose value failed validation
_Check = Callable[[object, str, list[FieldError]], object]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _join(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if prefix else field


def _simple(fn: Callable[[object], object]) -> _Check:
    """Adapt a scalar check that raises `_Invalid` to the collecting signature."""

    def check(value: object, path: str, errors: list[FieldError]) -> object:
        try:
            return fn(value)
        except _Invalid as exc:
            errors.append(FieldError(path, str(exc)))
            return _INVALID

    return check


# Control characters (NUL, ESC, ...), invisible format characters (bidi overrides such as
# U+202E, zero-width marks), surrogates and line/paragraph separators: none has a place in
# a record's text, and each can hide or reorder what a reader sees or break an export.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _refuse_hidden(text: str, allowed: str = "") -> str:
    if text.isprintable():  # the usual case, in C: none of the refused categories is printable
        return text
    for position, char in enumerate(text, 1):
        if char not in allowed and unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise _Invalid(
                f"must not contain control or invisible formatting characters "
                f"(U+{ord(char):04X} at position {position})"
            )
    return text


def _string(value: object, multiline: bool = False) -> str:
    """A stripped string without hidden characters; a `multiline` one keeps its line
    breaks as plain newlines (CRLF and CR become LF)."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_json_type(value)}")
    if multiline:
        text = value.replace("\r\n", "\n").replace("\r", "\n").strip()
        return _refuse_hidden(text, allowed="\n")
    return _refuse_hidden(value.strip())


def _text(max_len: int, multiline: bool = False) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _string(value, multiline)
        if not text:
            raise _Invalid("must not be empty")
        if len(text) > max_len:
            raise _Invalid(f"must be at most {max_len} characters, got {len(text)}")
        return text

    return check


def _note(value: object) -> str:
    """Free text that may be empty (a note cleared when a proposal moves on); it may run
    over several lines (the page's reason box)."""
    text = _string(value, multiline=True)
    if len(text) > TEXT_MAX_LEN:
        raise _Invalid(f"must be at most {TEXT_MAX_LEN} characters, got {len(text)}")
    return text


def _nama(value: object) -> str:
    return _text(NAMA_MAX_LEN)(value).upper()


def _digits(count: int) -> Callable[[object], str]:
    pattern = re.compile(rf"[0-9]{{{count}}}")

    def check(value: object) -> str:
        text = _string(value)
        if not pattern.fullmatch(text):
            raise _Invalid(f"expected exactly {count} digits, got {text!r}")
        return text

    return check


def _rt_rw(value: object) -> str:
    text = _string(value)
    if not _RT_RW_RE.fullmatch(text):
        raise _Invalid(f"expected 1 to 3 digits, got {text!r}")
    return text.zfill(3)


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    """Match case-insensitively (and ignoring repeated spaces); return the canonical spelling."""
    canonical = {" ".join(o.split()).casefold(): o for o in options}

    def check(value: object) -> str:
        text = _string(value)
        found = canonical.get(" ".join(text.split()).casefold())
        if found is None:
            raise _Invalid(f"expected one of {', '.join(options)}; got {text!r}")
        return found

    return check


def _desil(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(
            f"expected a whole number from {DESIL_MIN} to {DESIL_MAX}, got {_json_type(value)}"
            + (f" {value!r}" if isinstance(value, str | float) else "")
        )
    if not DESIL_MIN <= value <= DESIL_MAX:
        raise _Invalid(f"expected a whole number from {DESIL_MIN} to {DESIL_MAX}, got {value}")
    return value


def _tanggal_lahir(value: object) -> str:
    text = _string(value)
    match = _ISO_DATE_RE.fullmatch(text)
    if not match:
        raise _Invalid(f"expected a date as YYYY-MM-DD, got {text!r}")
    try:
        born = date(*(int(part) for part in match.groups()))
    except ValueError:
        raise _Invalid(f"{text} is not a real date") from None
    if born > date.today():
        raise _Invalid(f"{text} is in the future")
    return born.isoformat()


def _program(value: object, path: str, errors: list[FieldError]) -> object:
    if not isinstance(value, list):
        errors.append(FieldError(path, f"expected an array of programmes, got {_json_type(value)}"))
        return _INVALID
    check = _simple(_choice(PROGRAMS))
    seen: set[str] = set()
    before = len(errors)
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        program = check(item, item_path, errors)
        if not isinstance(program, str):
            continue
        if program in seen:
            errors.append(FieldError(item_path, f"{program} is listed more than once"))
        seen.add(program)
    if len(errors) > before:
        return _INVALID
    return sorted(seen)


def _rumah(value: object, path: str, errors: list[FieldError]) -> object:
    if not isinstance(value, dict):
        errors.append(FieldError(path, f"expected an object, got {_json_type(value)}"))
        return _INVALID
    result = _check_fields(value, RUMAH_FIELDS, _RUMAH_CHECKS, path, errors, partial=False)
    return _INVALID if result is None else result


_MEMBER_CHECKS: dict[str, _Check] = {
    "nik": _simple(_digits(16)),
    "nama": _simple(_nama),
    "tanggal_lahir": _simple(_tanggal_lahir),
    "jenis_kelamin": _simple(_choice(JENIS_KELAMIN)),
    "hubungan": _simple(_choice(HUBUNGAN)),
    "pekerjaan": _simple(_text(TEXT_MAX_LEN)),
}
_RUMAH_CHECKS: dict[str, _Check] = {
    field: _simple(_choice(options)) for field, options in RUMAH_CHOICES.items()
}
_HOUSEHOLD_CHECKS: dict[str, _Check] = {
    "kode_wilayah": _simple(_digits(10)),
    "no_kk": _simple(_digits(16)),
    "dusun": _simple(_text(TEXT_MAX_LEN)),
    "rt": _simple(_rt_rw),
    "rw": _simple(_rt_rw),
    "alamat": _simple(_text(TEXT_MAX_LEN, multiline=True)),  # a spreadsheet cell may break it
    "desil": _simple(_desil),
    "status_usulan": _simple(_choice(STATUS_USULAN)),
    "rumah": _rumah,
    "program": _program,
    "catatan_usulan": _simple(_note),
}


def _check_fields(
    data: Mapping[str, object],
    fields: tuple[str, ...],
    checks: Mapping[str, _Check],
    prefix: str,
    errors: list[FieldError],
    *,
    partial: bool,
    extra: tuple[str, ...] = (),
) -> dict | None:
    """Check `fields` of `data`; unknown keys (beyond `extra`) are errors. None if any failed."""
    before = len(errors)
    for key in data:
        if key not in fields and key not in extra:
            errors.append(FieldError(_join(prefix, str(key)), "unknown field"))
    result: dict[str, object] = {}
    for field in fields:
        path = _join(prefix, field)
        if field not in data:
            if not partial and field not in OPTIONAL_FIELDS:
                errors.append(FieldError(path, "is required"))
            continue
        value = checks[field](data[field], path, errors)
        if value is not _INVALID:
            result[field] = value
    return None if len(errors) > before else result


def _nik_errors(nik: str, member: Mapping[str, object], path: str) -> list[FieldError]:
    """The NIK's birth-date part (digits 7-12, DDMMYY, day + 40 for women) against the rest."""
    part = nik[6:12]
    nik_day, month, year2 = int(part[0:2]), int(part[2:4]), int(part[4:6])
    female = nik_day > NIK_FEMALE_DAY_OFFSET
    day = nik_day - NIK_FEMALE_DAY_OFFSET if female else nik_day
    if not (1 <= nik_day <= 31 or 41 <= nik_day <= 71):
        return [
            FieldError(
                path,
                f"digits 7-8 of NIK {nik} are the birth day: 01-31, or 41-71 for women; "
                f"got {nik_day:02d}",
            )
        ]
    if not any(_is_date(century + year2, month, day) for century in (1900, 2000)):
        return [FieldError(path, f"digits 7-12 of NIK {nik} ({part}, DDMMYY) are not a real date")]
    errors = []
    jenis_kelamin = member.get("jenis_kelamin")
    if jenis_kelamin in JENIS_KELAMIN and (jenis_kelamin == "P") != female:
        meaning = f"a woman (day {nik_day} = {day} + 40)" if female else f"a man (day {nik_day})"
        errors.append(
            FieldError(path, f"NIK {nik} is that of {meaning} but jenis_kelamin is {jenis_kelamin}")
        )
    tanggal_lahir = member.get("tanggal_lahir")
    if isinstance(tanggal_lahir, str):
        born = date.fromisoformat(tanggal_lahir)
        if (born.day, born.month, born.year % 100) != (day, month, year2):
            errors.append(
                FieldError(
                    path,
                    f"NIK {nik} gives birth date {day:02d}-{month:02d}-{year2:02d} (DD-MM-YY, "
                    f"digits 7-12 {part}) but tanggal_lahir is {tanggal_lahir}",
                )
            )
    return errors


def _is_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _member_id(value: object) -> str | None:
    if isinstance(value, str) and _MEMBER_ID_RE.fullmatch(value):
        return value
    return None


def household_id(value: object) -> str | None:
    """The canonical lower-case form of a UUID string, or None if `value` is not one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def _member(data: object, prefix: str, errors: list[FieldError], *, partial: bool) -> dict | None:
    if not isinstance(data, dict):
        errors.append(FieldError(prefix, f"expected an object, got {_json_type(data)}"))
        return None
    result = _check_fields(
        data, MEMBER_FIELDS, _MEMBER_CHECKS, prefix, errors, partial=partial, extra=("id",)
    )
    if result is None:
        return None
    if "nik" in result:
        nik_errors = _nik_errors(result["nik"], result, _join(prefix, "nik"))
        if nik_errors:
            errors.extend(nik_errors)
            return None
    member_id = _member_id(data.get("id"))
    return result if member_id is None else {"id": member_id, **result}


def validate_member(data: object, *, partial: bool = False) -> dict:
    """Validate one member; `partial` allows any subset of MEMBER_FIELDS (for a PATCH).

    A member `id` is passed through when it is a string of 1-32 of [A-Za-z0-9_-], and
    left out otherwise. With `partial`, NIK / jenis_kelamin / tanggal_lahir consistency is only
    checked among the fields given: re-validate the merged member to check it fully.
    """
    errors: list[FieldError] = []
    result = _member(data, "", errors, partial=partial)
    if result is None:
        raise ValidationError(errors)
    return result


def validate_fields(data: object) -> dict:
    """Validate a partial top-level update: any subset of UPDATABLE_FIELDS (not anggota, id)."""
    if not isinstance(data, dict):
        raise ValidationError([FieldError("", f"expected an object, got {_json_type(data)}")])
    errors: list[FieldError] = []
    for key, why in (
        ("id", "the id cannot be changed"),
        ("anggota", "change members one by one"),
        (PHOTOS_FIELD, "add or remove photos through /api/v1/records/{id}/photos"),
    ):
        if key in data:
            errors.append(FieldError(key, f"not allowed in a field update: {why}"))
    plain = {k: v for k, v in data.items() if k not in ("id", "anggota", PHOTOS_FIELD)}
    result = _check_fields(plain, UPDATABLE_FIELDS, _HOUSEHOLD_CHECKS, "", errors, partial=True)
    if result is None or errors:
        raise ValidationError(errors)
    return result


def validate_household(data: object) -> dict:
    """Validate a full household with its members; return a new normalised dict.

    `id` is kept (canonical lower-case form) when it is a valid UUID string and left out
    otherwise. Needs every field of HOUSEHOLD_FIELDS and at least one member; members' NIKs
    must be distinct. The number of "Kepala Keluarga" is deliberately not checked. Photo
    references (`foto`) are left out: the store keeps them as they are.
    """
    if not isinstance(data, dict):
        raise ValidationError([FieldError("", f"expected an object, got {_json_type(data)}")])
    errors: list[FieldError] = []
    plain = {k: v for k, v in data.items() if k not in ("id", "anggota", PHOTOS_FIELD)}
    result = _check_fields(plain, UPDATABLE_FIELDS, _HOUSEHOLD_CHECKS, "", errors, partial=False)
    members = _members(data.get("anggota"), "anggota" in data, errors)
    if result is None or members is None or errors:
        raise ValidationError(errors)
    canonical = household_id(data.get("id"))
    if data.get("id") is not None and canonical is None:
        raise ValidationError([FieldError("id", "expected a UUID such as 0190f6b2-…, or no id")])
    head = {} if canonical is None else {"id": canonical}
    return {**head, **result, "anggota": members}


def _members(value: object, present: bool, errors: list[FieldError]) -> list[dict] | None:
    if not present:
        errors.append(FieldError("anggota", "is required"))
        return None
    if not isinstance(value, list):
        errors.append(FieldError("anggota", f"expected an array, got {_json_type(value)}"))
        return None
    if not value:
        errors.append(FieldError("anggota", "a household needs at least one member"))
        return None
    before = len(errors)
    members: list[dict] = []
    first_with_nik: dict[str, int] = {}
    for index, item in enumerate(value):
        prefix = f"anggota[{index}]"
        member = _member(item, prefix, errors, partial=False)
        if member is None:
            continue
        nik = member["nik"]
        if nik in first_with_nik:
            errors.append(
                FieldError(
                    f"{prefix}.nik",
                    f"NIK {nik} is already used by anggota[{first_with_nik[nik]}]; "
                    "NIKs must be distinct within a household",
                )
            )
        first_with_nik.setdefault(nik, index)
        members.append(member)
    return None if len(errors) > before else members
