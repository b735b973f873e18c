"""Fixtures of the recording tests: a station with given sensors and a job context for it."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from fieldstation.clock import Clock, VirtualClock
from fieldstation.config import StationConfig, config_hash, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.job import JobContext
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment


class Progress:
    """Collects progress reports; can set ``ctx.stop`` after a number of chunks."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.ctx: JobContext | None = None
        self.stop_after_chunks: int | None = None
        self.stop_reason = "stopped"

    def __call__(self, what: str, details: dict[str, Any]) -> None:
        self.reports.append((what, details))
        if (
            what == "chunk"
            and self.ctx is not None
            and self.stop_after_chunks is not None
            and len(self.of("chunk")) >= self.stop_after_chunks
        ):
            self.ctx.stop_reason = self.stop_reason
            self.ctx.stop.set()

    def of(self, what: str) -> list[dict[str, Any]]:
        return [d for w, d in self.reports if w == what]


MakeCtx = Callable[..., tuple[JobContext, Progress]]


@pytest.fixture
def make_station(home: StationHome) -> Callable[..., StationConfig]:
    """``make_station(*sensors, **sections)``: the embedded default station living in ``home``
    with its sensors replaced by ``sensors`` (dicts) and top-level sections replaced."""

    def build(*sensors: dict[str, Any], **sections: Any) -> StationConfig:
        data = tomllib.loads(template_text())
        data["station"]["home"] = str(home.root)
        if sensors:
            data["sensors"] = list(sensors)
        data.update(sections)
        return parse_config(data)

    return build


@pytest.fixture
def make_ctx(home: StationHome, db: Database, clock: VirtualClock) -> MakeCtx:
    """``make_ctx(config, clock=None)``: a JobContext (with a deployment) and its Progress."""

    def build(config: StationConfig, clock_: Clock | None = None) -> tuple[JobContext, Progress]:
        with db.session() as session:
            deployment = start_deployment(
                session,
                station_id=config.station.id,
                config_hash=config_hash(config),
                config={},
                version="test",
                now=clock.now(),
            )
        progress = Progress()
        ctx = JobContext(
            config=config,
            home=home,
            deployment_id=deployment.id,
            clock=clock_ or clock,
            stop=threading.Event(),
            progress=progress,
            name="recorder:test",
        )
        progress.ctx = ctx
        return ctx, progress

    return build


@pytest.fixture
def read_chunks(home: StationHome) -> Callable[..., np.ndarray]:
    """``read_chunks(paths, dtype="int16")``: frames of chunk files (relative paths), joined."""

    def read(paths: list[str], dtype: str = "int16") -> np.ndarray:
        parts = [sf.read(str(home.root / p), dtype=dtype, always_2d=True)[0] for p in paths]
        return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=dtype)

    return read


@pytest.fixture
def spool_empty(home: StationHome) -> Callable[[], bool]:
    """``spool_empty()``: True when home/spool holds nothing."""
    return lambda: not any(Path(home.spool).iterdir())
