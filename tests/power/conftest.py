"""Fixtures of the power tests: stations with suspenders, a recorder context, curves."""

from __future__ import annotations

import copy
import threading
import tomllib
from collections.abc import Callable
from typing import Any

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, config_hash, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.job import JobContext
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment

SYN = {
    "name": "syn",
    "kind": "synthetic",
    "sample_rate": "1kHz",
    "frequency": 100,
    "chunk": "5m",
    "block": "1s",
}
"""A cheap synthetic stream: 1 kHz, 5-minute chunks, 1 s blocks."""


class Progress:
    """Collects the progress reports of a job; ``hook(what, details)`` runs after each."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.hook: Callable[[str, dict[str, Any]], None] | None = None

    def __call__(self, what: str, details: dict[str, Any]) -> None:
        self.reports.append((what, details))
        if self.hook is not None:
            self.hook(what, details)

    def of(self, what: str) -> list[dict[str, Any]]:
        return [d for w, d in self.reports if w == what]


@pytest.fixture
def station(home: StationHome) -> Callable[..., StationConfig]:
    """``station(**sections)``: the default station in ``home`` with sensor ``syn``
    (:data:`SYN`) and the given top-level sections."""

    def build(**sections: Any) -> StationConfig:
        data = tomllib.loads(template_text())
        data["station"]["home"] = str(home.root)
        data["sensors"] = [copy.deepcopy(SYN)]
        data.update(sections)
        return parse_config(data)

    return build


@pytest.fixture
def recorder_ctx(
    home: StationHome, db: Database, clock: VirtualClock
) -> Callable[[StationConfig], tuple[JobContext, Progress]]:
    """``recorder_ctx(config)``: a JobContext of ``recorder:syn`` (with a deployment)."""

    def build(config: StationConfig) -> tuple[JobContext, Progress]:
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
            clock=clock,
            stop=threading.Event(),
            progress=progress,
            name="recorder:syn",
        )
        return ctx, progress

    return build
