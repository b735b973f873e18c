"""Fixtures of the processing tests: a station with recordings written by the test itself."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.job import JobContext
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.testing.rows import add_recording

RATE = 48_000
START = datetime(2026, 6, 1, 5, 0, tzinfo=UTC)


def chirp_signal(
    duration: float, onsets: list[float], *, rate: int = RATE, seed: int = 0, snr_db: float = 20
) -> np.ndarray:
    """White noise (RMS 0.01) with 30 ms 3→8 kHz chirps starting exactly at ``onsets`` (s)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.01, int(duration * rate))
    n = int(0.03 * rate)
    t = np.arange(n) / rate
    f0, f1 = 3000.0, 8000.0
    chirp = np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * 0.03) * t**2))
    chirp *= np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.001)  # 1 ms ramps, no clicks
    amplitude = 0.01 * np.sqrt(2) * 10 ** (snr_db / 20)
    for onset in onsets:
        s = int(round(onset * rate))
        x[s : s + n] += amplitude * chirp[: len(x) - s]
    return x.astype(np.float32)


@pytest.fixture(name="chirp_signal")
def chirp_signal_fixture() -> Callable[..., np.ndarray]:
    """:func:`chirp_signal`, for tests."""
    return chirp_signal


def processor_section(**fields: Any) -> dict[str, Any]:
    """An energy processor section of a station file."""
    return {"name": "energy", "model": "energy", **fields}


class Station:
    """A station home + database + config, and helpers to add recordings to it."""

    def __init__(self, home: StationHome, config: StationConfig, db: Database) -> None:
        self.home, self.config, self.db = home, config, db
        with db.session() as session:
            self.deployment_id = start_deployment(
                session,
                station_id=config.station.id,
                config_hash="test",
                config={},
                version="test",
                now=START,
            ).id
        self._n = 0
        self.data: dict[str, Any] = {}
        """The station file as a dict (to hand to another process)."""

    def add_recording(
        self,
        samples: np.ndarray | None = None,
        *,
        sensor: str = "mic",
        rate: int = RATE,
        raw: bytes | None = None,
        started_at: datetime | None = None,
        end_reason: str = "complete",
    ) -> int:
        """Write a FLAC (or ``raw`` bytes) under data/ and insert its ``recorded`` row."""
        self._n += 1
        started_at = started_at or START + timedelta(seconds=60 * self._n)
        rel = Path("data") / sensor / started_at.date().isoformat() / f"{self._n:04d}.flac"
        path = self.home.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            path.write_bytes(raw)
            frames = rate
        else:
            assert samples is not None
            sf.write(path, samples, rate, subtype="PCM_16")
            frames = len(samples)
        with self.db.session() as session:
            row = add_recording(
                session,
                deployment_id=self.deployment_id,
                started_at=started_at,
                sensor=sensor,
                path=str(rel),
                duration=frames / rate,
                rate=rate,
                frames=frames,
                bytes=path.stat().st_size,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                format="flac",
                end_reason=end_reason,
            )
            return row.id

    def context(
        self,
        clock: VirtualClock | None = None,
        progress: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> JobContext:
        """A job context on this station, recording progress reports into ``progress``."""
        reports = progress if progress is not None else []
        return JobContext(
            config=self.config,
            home=self.home,
            deployment_id=self.deployment_id,
            clock=clock or VirtualClock(START + timedelta(hours=1)),
            progress=lambda what, details: reports.append((what, details)),
            name="processor:test",
        )


@pytest.fixture
def make_station(home: StationHome, db: Database) -> Callable[..., Station]:
    """``make_station(processors=[...], sensors=[...])`` builds a :class:`Station`."""

    def build(**sections: Any) -> Station:
        sections.setdefault("processors", [processor_section()])
        data = tomllib.loads(template_text())
        data["station"]["home"] = str(home.root)
        data.update(sections)
        station = Station(home, parse_config(data), db)
        station.data = data
        return station

    return build
