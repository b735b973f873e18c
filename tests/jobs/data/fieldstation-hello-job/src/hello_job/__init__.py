"""A complete third-party fieldstation job: ``[[jobs]] kind = "hello"`` appends ``message``
(and the time) to ``<home>/<file>`` every ``every`` seconds."""

from __future__ import annotations

import threading
from typing import Any

from pydantic import Field

from fieldstation.config.jobs import JobConfig, JobPlugin
from fieldstation.config.units import Seconds


class HelloConfig(JobConfig):
    """The job's section of the station file (a ``[[jobs]]`` entry with kind = "hello")."""

    message: str = Field(min_length=1, description="What to write.")
    file: str = Field(default="hello.txt", description="File in the station home.")
    every: Seconds = Field(default=60.0, gt=0, description="Seconds between lines.")


class HelloJob:
    """Appends a line per turn until ``stop`` is set."""

    def __init__(self, config: HelloConfig, station: Any, clock: Any, home: Any) -> None:
        self.config = config
        self.station = station
        self.clock = clock
        self.path = home.root / config.file

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(
                    f"{self.clock.now().isoformat()} {self.station.station.id} "
                    f"{self.config.message}\n"
                )
            if self.clock.wait(stop, self.config.every):
                break


def _create(
    config: HelloConfig, *, station: Any, db: Any, clock: Any, home: Any, **_: Any
) -> HelloJob:
    return HelloJob(config, station, clock, home)


plugin = JobPlugin(config_model=HelloConfig, factory=_create, description=__doc__ or "")
