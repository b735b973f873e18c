"""Helpers the benchmark scripts share (a station with given sensors, a job context on it).

Benchmarks are run as ``python3 bench/<name>.py``, so this folder is on ``sys.path``.
"""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path
from typing import Any

from fieldstation.clock import Clock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.job import JobContext
from fieldstation.store import open_database
from fieldstation.store.deployments import start_deployment


def station(home: Path, sensor: dict[str, Any]) -> StationConfig:
    """The embedded default station living in ``home`` with ``sensor`` as its only sensor."""
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    data["sensors"] = [sensor]
    return parse_config(data)


def context(config: StationConfig, clock: Clock, progress: Any) -> JobContext:
    """A job context on ``config``'s home with a fresh deployment and its database open."""
    home = StationHome(config.home_path()).ensure()
    db = open_database(home.database)
    with db.session() as session:
        deployment = start_deployment(
            session,
            station_id=config.station.id,
            config_hash="bench",
            config={},
            version="bench",
            now=clock.now(),
        )
    ctx = JobContext(config, home, deployment.id, clock, threading.Event(), progress, "bench")
    ctx.__dict__["db"] = db
    return ctx
