"""Shared pieces of the `simpul` commands: running a coroutine with one-line errors, secrets."""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from simpul.crypto.data_key import KeyUnwrapError
from simpul.crypto.enrollment import EnrollmentError
from simpul.crypto.network_root import RootKeyError
from simpul.crypto.node_certificate import CertificateRejected
from simpul.crypto.node_key import KeyFileError
from simpul.crypto.revocation import RevocationListRejected
from simpul.node.backup import BackupError
from simpul.node.clock_floor import ClockBehind
from simpul.node.hub_networks import HubError
from simpul.node.membership import MembershipError
from simpul.sync.csv_households import CsvFormatError
from simpul.sync.database import DatabaseError
from simpul.sync.feed import FeedError
from simpul.sync.operators import OperatorError

log = logging.getLogger("simpul")

T = TypeVar("T")

EXPECTED_ERRORS = (
    OperatorError,
    DatabaseError,
    KeyFileError,
    CsvFormatError,
    FeedError,
    MembershipError,
    OSError,
    KeyUnwrapError,
    EnrollmentError,
    RootKeyError,
    CertificateRejected,
    RevocationListRejected,
    BackupError,
    ClockBehind,
    HubError,
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning expected failures into one-line errors."""
    try:
        return asyncio.run(coro)
    except EXPECTED_ERRORS as exc:
        log.debug("command failed", exc_info=True)
        raise click.ClickException(str(exc) or type(exc).__name__) from None


def guarded(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a synchronous step, turning expected failures into one-line errors."""
    try:
        return function(*args, **kwargs)
    except EXPECTED_ERRORS as exc:
        log.debug("command failed", exc_info=True)
        raise click.ClickException(str(exc) or type(exc).__name__) from None


def read_secret(prompt: str, from_stdin: bool, confirm: bool = False) -> str:
    """A password or passphrase: one line of stdin, or typed at a hidden prompt."""
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = getpass.getpass(f"{prompt}: ")
        if confirm and getpass.getpass("Again: ") != secret:
            raise click.ClickException("the two entries differ")
    if not secret:
        raise click.ClickException(f"{prompt.lower()} must not be empty")
    return secret


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def echo_rejections(rejected: list[dict[str, Any]], more: str = "", shown: int = 50) -> None:
    """The rows an import rejected, on stderr: line and reason, the first `shown` of them
    (`more`: where to find the rest)."""
    for rejection in rejected[:shown]:
        click.echo(f"  line {rejection['line']}: {rejection['reason']}", err=True)
    if len(rejected) > shown:
        click.echo(f"  … and {len(rejected) - shown} more{more}", err=True)
