"""Export households in the canonical JSON-lines shape or the offices' flat CSV shape."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

CSV_COLUMNS = [
    "ID KELUARGA",
    "KODE WILAYAH",
    "DUSUN",
    "RT",
    "RW",
    "ALAMAT",
    "NOMOR KK",
    "NIK",
    "NAMA",
    "TANGGAL LAHIR",
    "JENIS KELAMIN",
    "HUBUNGAN KELUARGA",
    "PEKERJAAN",
    "DESIL",
    "STATUS USULAN",
    "LANTAI",
    "DINDING",
    "ATAP",
    "SUMBER AIR",
    "PROGRAM",
]


def public_shape(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record without server-side `_meta`, members keeping their stable ids."""
    return {k: v for k, v in record.items() if k != "_meta"}


def jsonl_line(record: Mapping[str, Any]) -> str:
    return json.dumps(public_shape(record), ensure_ascii=False, separators=(",", ":")) + "\n"


def csv_rows(record: Mapping[str, Any]) -> Iterator[list[str]]:
    """One row per member, household columns repeated, dates as dd/mm/yyyy."""
    rumah = record.get("rumah", {})
    for member in record.get("anggota", []):
        year, month, day = member["tanggal_lahir"].split("-")
        yield [
            record["id"],
            record["kode_wilayah"],
            record["dusun"],
            record["rt"],
            record["rw"],
            record["alamat"],
            record["no_kk"],
            member["nik"],
            member["nama"],
            f"{day}/{month}/{year}",
            member["jenis_kelamin"],
            member["hubungan"],
            member["pekerjaan"],
            str(record["desil"]),
            record["status_usulan"],
            rumah.get("lantai", ""),
            rumah.get("dinding", ""),
            rumah.get("atap", ""),
            rumah.get("sumber_air", ""),
            ",".join(record.get("program", [])),
        ]
