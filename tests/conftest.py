"""Fixtures shared by every test module: station configs, homes, databases, clocks, samples."""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.store import Database, open_database

SAMPLES = Path(
    os.environ.get("FIELDSTATION_SAMPLES", Path("~/.cache/fieldstation/samples").expanduser())
)


def default_data() -> dict[str, Any]:
    """The embedded default station file as a dict, to modify in a test."""
    return tomllib.loads(template_text())


def make_config(home: Path, **sections: Any) -> StationConfig:
    """The default station with ``home`` set and top-level sections replaced by ``sections``."""
    data = copy.deepcopy(default_data())
    data["station"]["home"] = str(home)
    data.update(sections)
    return parse_config(data)


@pytest.fixture
def home(tmp_path: Path) -> StationHome:
    """A fresh station home folder (created)."""
    return StationHome(tmp_path / "home").ensure()


@pytest.fixture
def config(home: StationHome) -> StationConfig:
    """The embedded default station living in ``home``."""
    return make_config(home.root)


@pytest.fixture
def db(home: StationHome) -> Iterator[Database]:
    """The migrated station database of ``home``."""
    database = open_database(home.database)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock starting 2026-06-01 00:00 UTC."""
    return VirtualClock(datetime(2026, 6, 1, tzinfo=UTC))


def _samples(kind: str) -> list[Path]:
    folder = SAMPLES / kind
    files = (
        sorted(p for p in folder.glob("*") if p.suffix.lower() == ".wav") if folder.exists() else []
    )
    if not files:
        pytest.skip(f"no {kind} samples in {folder}: run scripts/fetch-sample-data")
    return files


@pytest.fixture
def bat_files() -> list[Path]:
    """The 9 real bat WAVs (skips when not fetched)."""
    return _samples("bats")


@pytest.fixture
def bird_files() -> list[Path]:
    """The real bird recording(s) (skips when not fetched)."""
    return _samples("birds")
