"""Data dirs of certified nodes, made once per test session with the real `simpul` command
and copied by each test that runs or changes them (making them costs several processes).

- `office_and_village(base)`: an office node that made a network and a village node it
  enrolled by file; the `enrolled_pair` fixture holds one per session and
  `office_village` gives each test its own copy (kantor/, desa/ under its tmp_path).
- `networks`: three nodes of one network and one of another, for the namespace LAN
  tests (they start nodes on copies).

conftest.py loads this module as a plugin, so every test module sees the fixtures.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_network_cli import create_network, enrol_by_file


def office_and_village(base: Path) -> tuple[Path, Path]:
    """The office node (it made the network, it holds the root) and a village node it
    enrolled by file: both certified, never connected."""
    office, village = base / "kantor", base / "desa"
    create_network(office)
    enrol_by_file(office, village, base)  # the scope 1709
    return office, village


def copy_pair(pair: tuple[Path, Path], base: Path) -> tuple[Path, Path]:
    """A copy of the office and village data dirs under `base`, with the same names."""
    office, village = (shutil.copytree(d, base / d.name) for d in pair)
    return office, village


@pytest.fixture(scope="session")
def enrolled_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`office_and_village`, made once per session: copy it, never change it."""
    return office_and_village(tmp_path_factory.mktemp("enrolled-pair"))


@pytest.fixture
def office_village(enrolled_pair: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """This test's own copy of the session's office and village (kantor/, desa/)."""
    return copy_pair(enrolled_pair, tmp_path)


@dataclass
class Networks:
    """Three nodes of one network and one of another; tests run nodes on copies."""

    office: list[Path]
    foreign: Path
    network_id: str
    foreign_network_id: str


@pytest.fixture(scope="session")
def networks(tmp_path_factory: pytest.TempPathFactory) -> Networks:
    base = tmp_path_factory.mktemp("networks")
    admin = base / "admin"
    network_id = create_network(admin)["network_id"]
    office = [admin] + [base / f"desa{i}" for i in (1, 2)]
    for device in office[1:]:
        enrol_by_file(admin, device, base)
    foreign = base / "lain"
    return Networks(office, foreign, network_id, create_network(foreign)["network_id"])
