"""`simpul backup` and `simpul restore`: one encrypted file holding a node's records and network.

A backup is taken while the node runs: `VACUUM INTO` on a reading connection copies one
consistent snapshot of the database (readers never block the node's writer in WAL mode),
and the network files and the house photos (photos/<xx>/<sha256>) are copied beside it.
The file (format in docs/protocol.md)::

    "SBK1" | log2(N) | r | p | salt 16 | nonce prefix 7        header (crypto/passphrase_key.py)
    AES-256-GCM segments (crypto/sealed_stream.py)             key = scrypt(passphrase)
      of a zstd frame of a tar stream: manifest.json, simpul.db, network/..., photos/...

The node's private keys (`node.key`, `exchange.key`) are never in a backup. A restore makes
a new identity on the new device (decision 0009): the old node id's feed becomes history
that the new node holds and forwards but never extends, so a restored node can never fork
the old feed, and it takes back from its peers the old node's changes the backup missed.
The new identity joins the network like any new device (`simpul enroll request`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import zstandard

from simpul.crypto.node_certificate import NodeCertificate
from simpul.crypto.node_key import NodeKey
from simpul.crypto.passphrase_key import DEFAULT_LOG2_N, PassphraseKey, PassphraseKeyError
from simpul.crypto.sealed_stream import (
    PREFIX_BYTES,
    OpeningReader,
    SealError,
    SealingWriter,
    new_prefix,
)
from simpul.node.membership import EXCHANGE_KEY_FILE, NETWORK_DIR, NODE_CERT, ROOT_KEY
from simpul.node.runtime import DB_FILE, KEY_FILE, open_node, prepare_data_dir
from simpul.sync.photo_store import PHOTO_DIR, PhotoStore, is_hash

log = logging.getLogger(__name__)

MAGIC = b"SBK1"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
HEADER_BYTES = PassphraseKey.SIZE + PREFIX_BYTES
STAGING = ".restore"


class BackupError(Exception):
    """A backup cannot be written or restored; the message says why and what to do."""


@dataclass(frozen=True)
class Manifest:
    """What a backup holds, written first in it."""

    format: int
    node_id: str
    schema_version: int
    records: int
    created: str
    files: list[str]


@dataclass(frozen=True)
class Restored:
    """The outcome of a restore: the old identity, the new one, and what came back."""

    old_node_id: str
    new_node_id: str
    records: int
    enrolled_before: bool
    holds_root: bool  # the admin's device: it certifies itself again ('network rejoin')


def _snapshot(database: Path, target: Path) -> tuple[int, int]:
    """A consistent copy of `database` at `target`; its (schema version, live records)."""
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read the database {database}: {exc}") from exc
    try:
        conn.execute("VACUUM INTO ?", (str(target),))
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        records = conn.execute("SELECT count(*) FROM records WHERE deleted = 0").fetchone()[0]
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy the database {database}: {exc}") from exc
    finally:
        conn.close()
    return int(version), int(records)


def _network_files(data_dir: Path) -> list[Path]:
    folder = data_dir / NETWORK_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))


def _photo_files(data_dir: Path) -> list[Path]:
    """The stored photo files (not partial downloads nor damaged ones set aside)."""
    store = PhotoStore(data_dir)
    return sorted(store.path(digest) for digest in store.held())


def _is_photo_path(path: PurePosixPath) -> bool:
    parts = path.parts
    return (
        len(parts) == 3 and parts[0] == PHOTO_DIR and is_hash(parts[2]) and parts[1] == parts[2][:2]
    )


def _add(tar: tarfile.TarFile, name: str, source: BinaryIO, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    tar.addfile(info, source)


def write_backup(
    data_dir: Path, out: Path, passphrase: str, log2_n: int = DEFAULT_LOG2_N
) -> Manifest:
    """Write the encrypted backup of the node in `data_dir` to `out` (0600, atomic)."""
    database = data_dir / DB_FILE
    if not database.is_file():
        raise BackupError(f"no node database in {data_dir}: nothing to back up")
    key_file = data_dir / KEY_FILE
    node_id = NodeKey.load(key_file).node_id_hex if key_file.exists() else ""
    how = PassphraseKey.new(MAGIC, log2_n)
    prefix = new_prefix()
    header = how.pack() + prefix
    key = how.derive(passphrase)
    partial = out.with_name(out.name + ".partial")
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=data_dir) as tmp:
        snapshot = Path(tmp) / DB_FILE
        version, records = _snapshot(database, snapshot)
        files = _network_files(data_dir) + _photo_files(data_dir)
        manifest = Manifest(
            FORMAT_VERSION,
            node_id,
            version,
            records,
            datetime.now(UTC).isoformat(timespec="seconds"),
            [DB_FILE] + [p.relative_to(data_dir).as_posix() for p in files],
        )
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as raw:
                raw.write(header)
                sealed = SealingWriter(raw, key, prefix, header)
                compressor = zstandard.ZstdCompressor(level=3).stream_writer(sealed, closefd=False)
                with tarfile.open(fileobj=compressor, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    text = json.dumps(manifest.__dict__, indent=1).encode()
                    _add(tar, MANIFEST, io.BytesIO(text), len(text))
                    with snapshot.open("rb") as source:
                        _add(tar, DB_FILE, source, snapshot.stat().st_size)
                    for path in files:
                        with path.open("rb") as source:
                            _add(
                                tar,
                                path.relative_to(data_dir).as_posix(),
                                source,
                                os.fstat(source.fileno()).st_size,
                            )
                compressor.close()
                sealed.close()
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    log.info("backup written path=%s records=%d files=%d", out, records, len(manifest.files))
    return manifest


def _safe_member(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BackupError(f"the backup holds an unsafe path {name!r}; refused")
    known = path.as_posix() in (MANIFEST, DB_FILE) or path.parts[0] == NETWORK_DIR
    if not (known or _is_photo_path(path)):
        raise BackupError(f"the backup holds an unexpected file {name!r}; refused")
    return path


def _unpack(source: Path, passphrase: str, staging: Path) -> Manifest:
    with source.open("rb") as raw:
        header = raw.read(HEADER_BYTES)
        try:
            how = PassphraseKey.unpack(header, MAGIC)
        except PassphraseKeyError as exc:
            raise BackupError(f"{source} is not a Simpul backup ({exc})") from exc
        if len(header) < HEADER_BYTES:
            raise BackupError(f"{source} is not a Simpul backup (too short)")
        reader = OpeningReader(raw, how.derive(passphrase), header[-PREFIX_BYTES:], header)
        try:
            with (
                zstandard.ZstdDecompressor().stream_reader(reader) as plain,
                tarfile.open(fileobj=plain, mode="r|") as tar,
            ):
                for member in tar:
                    path = _safe_member(member.name)
                    if not member.isfile():
                        raise BackupError(f"the backup entry {member.name!r} is not a file")
                    target = staging.joinpath(*path.parts)
                    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(extracted, out)
        except SealError as exc:
            if "segment 0 " in str(exc):
                raise BackupError(f"wrong passphrase, or {source} is damaged") from exc
            raise BackupError(f"{source} is damaged: {exc}") from exc
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
            raise BackupError(f"{source} is damaged: {exc}") from exc
    try:
        manifest = Manifest(**json.loads((staging / MANIFEST).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise BackupError(f"{source} has no readable manifest: {exc}") from exc
    if manifest.format != FORMAT_VERSION:
        raise BackupError(f"{source} is backup format {manifest.format}; this Simpul reads 1")
    return manifest


def _check_database(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the database in the backup does not open: {exc}") from exc
    if result != [("ok",)]:
        raise BackupError(f"the database in the backup is damaged: {result[0][0]}")


def _refuse_existing_node(data_dir: Path) -> None:
    for name in (KEY_FILE, DB_FILE, EXCHANGE_KEY_FILE, NETWORK_DIR, PHOTO_DIR):
        if (data_dir / name).exists():
            raise BackupError(
                f"{data_dir} already holds a node ({name}); restore onto a new, empty data dir"
            )


async def restore(source: Path, data_dir: Path, passphrase: str) -> Restored:
    """Restore the backup `source` into the empty `data_dir` under a new node identity."""
    _refuse_existing_node(data_dir)
    prepare_data_dir(data_dir)
    staging = data_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    try:
        manifest = _unpack(source, passphrase, staging)
        _check_database(staging / DB_FILE)
        old_certificate = staging / NETWORK_DIR / NODE_CERT
        certificate = old_certificate.read_bytes() if old_certificate.exists() else b""
        old_certificate.unlink(missing_ok=True)  # the old identity's; the new one enrols anew
        if (staging / NETWORK_DIR).exists():
            (staging / NETWORK_DIR).rename(data_dir / NETWORK_DIR)
        (staging / DB_FILE).rename(data_dir / DB_FILE)
        if (staging / PHOTO_DIR).exists():
            (staging / PHOTO_DIR).rename(data_dir / PHOTO_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    async with open_node(data_dir) as node:  # makes the new key; migrates an older schema
        if certificate and manifest.node_id:
            NodeCertificate.parse(certificate)  # refuse a damaged one rather than store it
            async with node.db.write() as conn:
                await conn.execute(
                    "INSERT OR IGNORE INTO origin_certificates (origin, certificate) VALUES (?, ?)",
                    (bytes.fromhex(manifest.node_id), certificate),
                )
        records = (await node.records.counts())["records"]
        await node.photos.verify()  # a damaged photo is set aside and fetched again
        new_id = node.node_id
    log.info(
        "restore done old_node_id=%s new_node_id=%s records=%d",
        manifest.node_id,
        new_id,
        records,
    )
    holds_root = (data_dir / NETWORK_DIR / ROOT_KEY).exists()
    return Restored(manifest.node_id, new_id, records, bool(certificate), holds_root)
