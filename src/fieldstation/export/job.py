"""The scheduled export job (``[[jobs]] kind = "export"``): every ``every`` seconds, the rows
new since the last export of the same target, as :func:`~fieldstation.export.run.run_export`
writes them."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fieldstation.clock import Clock
from fieldstation.config.jobs import JobConfig, JobPlugin
from fieldstation.config.units import Seconds

__all__ = ["ExportJob", "ExportJobConfig", "plugin"]

log = logging.getLogger(__name__)


class ExportJobConfig(JobConfig):
    """Export new detections, recordings, readings or model runs on a period."""

    what: Literal["detections", "recordings", "readings", "runs"] = Field(
        description="What to export (runs: every model run, also those that found nothing)."
    )
    format: Literal["csv", "parquet", "raven", "sql"] = Field(
        description="csv (one file), parquet (a folder of parts), raven (a folder, one "
        "selection table per recording; detections only) or sql (a database URL)."
    )
    to: str = Field(
        min_length=1,
        description="Target: a file or folder path, or for sql a SQLAlchemy URL "
        "(postgresql+psycopg://user@host/db).",
    )
    every: Seconds = Field(default=3600.0, gt=0, description="Seconds between exports.")
    since: Seconds | None = Field(
        default=None, gt=0, description="Only rows younger than this many seconds; omitted: all."
    )


class ExportJob:
    """Runs one export target's exports on a period (module docstring)."""

    def __init__(
        self, config: ExportJobConfig, *, station: Any, db: Any, clock: Clock, home_root: Path
    ) -> None:
        self.config = config
        self.station = station
        self.db = db
        self.clock = clock
        self.home_root = home_root

    def run_once(self) -> int:
        """One export; returns rows written."""
        from fieldstation.export.run import run_export

        since = None
        if self.config.since is not None:
            since = self.clock.now() - timedelta(seconds=self.config.since)
        result = run_export(
            self.db,
            home_root=self.home_root,
            station=self.station.station.id,
            what=self.config.what,
            fmt=self.config.format,
            to=self.config.to,
            since=since,
        )
        if result.rows:
            log.info(
                "export %s: %d %s to %s",
                self.config.name,
                result.rows,
                self.config.what,
                self.config.to,
            )
        return result.rows

    def run(self, stop: threading.Event) -> None:
        """Export every ``every`` seconds until ``stop``; a failed export is logged and tried
        again at the next turn (an unreachable database, a full disk)."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception(
                    "export %s failed; trying again in %g s", self.config.name, self.config.every
                )
            if self.clock.wait(stop, self.config.every):
                break


def _create(
    config: ExportJobConfig, *, station: Any, db: Any, clock: Clock, home: Any, **_: Any
) -> ExportJob:
    return ExportJob(config, station=station, db=db, clock=clock, home_root=home.root)


plugin = JobPlugin(
    config_model=ExportJobConfig,
    factory=_create,
    description="Scheduled, incremental exports (CSV, Parquet, Raven, SQL).",
    liveness=3600.0,
)
