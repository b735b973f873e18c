"""Fixtures of the retention tests: rows written directly, real files, a fake disk."""

from __future__ import annotations

import copy
import hashlib
import tomllib
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.store.models import ModelRun
from fieldstation.testing.rows import add_detection, add_model_run, add_recording


class Usage(NamedTuple):
    total: int
    used: int
    free: int


class FakeDisk:
    """A disk of ``capacity`` bytes holding the real files under ``root`` (plus ``other``)."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity
        self.other = 0
        self.calls = 0

    def used(self) -> int:
        return self.other + sum(
            p.stat().st_size
            for p in self.root.rglob("*")
            if p.is_file() and p.suffix in (".wav", ".flac")
        )

    def __call__(self, path: str | Path) -> Usage:
        self.calls += 1
        used = self.used()
        return Usage(self.capacity, used, max(0, self.capacity - used))


def station(
    home: StationHome,
    *,
    sensor_min_free: int = 200_000_000,
    more_sensors: tuple[str, ...] = (),
    **sections: Any,
) -> StationConfig:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data["sensors"][0]["min_free"] = sensor_min_free
    for name in more_sensors:
        data["sensors"].append({**copy.deepcopy(data["sensors"][0]), "name": name})
    data.update(sections)
    return parse_config(data)


class Rows:
    """Writes recordings (with real files) and detections straight into the database."""

    def __init__(self, db: Database, home: StationHome, clock: VirtualClock) -> None:
        self.db = db
        self.home = home
        self.clock = clock
        with db.session() as session:
            self.deployment_id = start_deployment(
                session,
                station_id="default",
                config_hash="x" * 64,
                config={},
                version="test",
                now=clock.now(),
            ).id
        self.count = 0

    def recording(
        self,
        *,
        size: int = 1000,
        state: str = "processed",
        sensor: str = "mic",
        started_at: datetime | None = None,
        pinned: bool = False,
        write: bool = True,
    ) -> int:
        self.count += 1
        start = started_at or self.clock.now() + timedelta(seconds=10 * self.count)
        rel = f"data/{sensor}/{start:%Y-%m-%d}/{self.count:06d}.wav"
        path = self.home.root / rel
        payload = bytes(size)
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
        with self.db.session() as session:
            row = add_recording(
                session,
                deployment_id=self.deployment_id,
                started_at=start,
                sensor=sensor,
                path=rel,
                bytes=size,
                sha256=hashlib.sha256(payload).hexdigest(),
                state=state,
                pinned=pinned,
                processed_at=start if state == "processed" else None,
            )
            return row.id

    def detection(self, recording_id: int, label: str, score: float) -> None:
        """One more detection in the recording's one run of ``energy`` (made by the first):
        several detections of one analysis, not a re-analysis per detection."""
        with self.db.session() as session:
            run = session.scalars(
                select(ModelRun).where(ModelRun.recording_id == recording_id)
            ).first()
            if run is None:
                run = add_model_run(session, recording_id, started_at=self.clock.now())
            run.n_detections += 1
            add_detection(session, run, label=label, score=score, detected_at=self.clock.now())


@pytest.fixture
def rows(db: Database, home: StationHome, clock: VirtualClock) -> Rows:
    return Rows(db, home, clock)


@pytest.fixture
def fake_disk(home: StationHome) -> Callable[[int], FakeDisk]:
    return lambda capacity: FakeDisk(home.root, capacity)


@pytest.fixture
def make_station(home: StationHome) -> Callable[..., StationConfig]:
    """``make_station(sensor_min_free=..., retention={...}, outputs=[...])``."""
    return lambda **kwargs: station(home, **kwargs)


@pytest.fixture
def make_rows() -> Callable[[Database, StationHome, VirtualClock], Rows]:
    """``make_rows(db, home, clock)`` for a database other than the ``db`` fixture."""
    return Rows


@pytest.fixture
def station_for() -> Callable[..., StationConfig]:
    """``station_for(home, sensor_min_free=..., **sections)``."""
    return station
