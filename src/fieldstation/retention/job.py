"""The retention job: policy deletions, then quotas, then the disk-low report.

Order of one :meth:`RetentionJob.run_once`:

1. per-sensor policies (``retention.sensors`` else ``retention.default``): ``keep="days"``
   deletes recordings older than ``days``; ``keep="detections"`` deletes processed recordings
   without a detection of the given labels at or above ``min_score``; ``keep="all"`` nothing;
2. ``retention.max_bytes``: the oldest deletable recordings until the present recordings fit;
3. ``retention.min_free``: the oldest deletable recordings until the disk of the station home has
   that much free space (re-measured, at most :data:`MIN_FREE_ROUNDS` rounds);
4. when space is still short, a ``disk_low`` event (once, until a ``disk_ok`` event clears it)
   naming the sensors whose own ``min_free`` guard now stops their chunks.

Deletable (every step): file present, state processed/failed/quarantined (never recorded or
processing), not pinned, no ``recording`` notice left unsent (pending, dead or dropped) when
``protect_unsent``, not among the best ``best_per_label`` of a label, not waiting for the
hub to confirm its upload when ``[upload]`` is configured. Crash-safe order
(decision 0050): the rows are marked deleted and committed first, then the files are unlinked;
a crash in between leaves files whose rows say deleted, removed by the sweep of the first run
after start-up.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_

from fieldstation.clock import Clock
from fieldstation.config import StationConfig
from fieldstation.config.retention import RetentionPolicy
from fieldstation.config.units import format_bytes
from fieldstation.home import StationHome
from fieldstation.store import Database
from fieldstation.store.events import record_event
from fieldstation.store.models import Recording
from fieldstation.store.readings import delete_older_than
from fieldstation.store.retention import (
    Protection,
    deletable,
    deleted_paths,
    last_event_kind,
    mark_deleted,
    mark_oldest_deleted,
    no_detection_kept,
    present_bytes,
    sensor_clause,
)
from fieldstation.store.uploads import UploadSelection

__all__ = ["MIN_FREE_ROUNDS", "DiskUsage", "RetentionJob", "RetentionReport"]

log = logging.getLogger(__name__)

MIN_FREE_ROUNDS = 3
"""Rounds of (measure free space, delete) per run for ``min_free``: file sizes on disk differ
from the bytes the database records (blocks, metadata), so the disk is measured again."""
EVENT_SOURCE = "retention"


DiskUsage = Callable[[str | Path], Any]
"""``shutil.disk_usage``-like: path → object with ``total``, ``used``, ``free`` (bytes)."""


class Deleted(NamedTuple):
    recording_id: int
    path: str
    bytes: int


@dataclass
class RetentionReport:
    """What one run did. Bytes are as recorded in the database; times in seconds."""

    deleted: dict[str, int] = field(default_factory=dict)
    """Recordings marked deleted, per reason (``age``, ``no_detections``, ``max_bytes``,
    ``min_free``)."""
    freed_bytes: int = 0
    unlinked: int = 0
    swept: int = 0
    """Leftover files of rows already marked deleted, removed (crash recovery)."""
    readings_deleted: int = 0
    """Values of slow sensors deleted for ``readings_max_age``."""
    data_bytes: int = 0
    """Bytes of present recordings after the run."""
    disk_free: int | None = None
    disk_total: int | None = None
    short_bytes: int = 0
    """Space still missing after deleting everything deletable (``min_free`` and quota)."""
    blocked_sensors: list[str] = field(default_factory=list)
    """Enabled sensors whose ``min_free`` is above the free space: their recorders stop."""
    event: str | None = None
    """``disk_low`` or ``disk_ok`` when this run recorded that event."""
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time of the run."""
    file_seconds: float = 0.0
    """Part of ``seconds`` spent on the filesystem (unlinks and the start-up sweep's walk)."""

    @property
    def total_deleted(self) -> int:
        return sum(self.deleted.values())


class RetentionJob:
    """Applies the retention rules of ``config`` to the station database and data folder."""

    def __init__(
        self,
        config: StationConfig,
        db: Database,
        home: StationHome,
        clock: Clock,
        disk_usage: DiskUsage = shutil.disk_usage,
    ) -> None:
        self.config = config
        self.db = db
        self.home = home
        self.clock = clock
        self.disk_usage = disk_usage
        self._swept = False
        self._root = str(home.root)
        self._retry: set[str] = set()

    # -- the rules -------------------------------------------------------------------------
    def _protection(self) -> Protection:
        cfg = self.config.retention
        return Protection(
            protect_unsent=cfg.protect_unsent,
            best_per_label=cfg.best_per_label,
            upload=None if self.config.upload is None else UploadSelection.of(self.config.upload),
        )

    def _policies(self) -> list[tuple[ColumnElement[bool], RetentionPolicy]]:
        cfg = self.config.retention
        named = sorted(cfg.sensors)
        rules = [(sensor_clause([name]), cfg.sensors[name]) for name in named]
        rules.append((sensor_clause(None, exclude=named), cfg.default))
        return rules

    def _policy_clause(self, policy: RetentionPolicy) -> tuple[ColumnElement[bool], str] | None:
        if policy.keep == "days" and policy.days is not None:
            cutoff = self.clock.now() - timedelta(days=policy.days)
            return Recording.started_at < cutoff, "age"
        if policy.keep == "detections":
            clause = and_(
                Recording.state == "processed",
                no_detection_kept(policy.labels, policy.min_score),
            )
            return clause, "no_detections"
        return None

    # -- one run ---------------------------------------------------------------------------
    def run_once(self) -> RetentionReport:
        """Apply every rule once (see the module docstring); returns what was done.

        Database errors propagate (nothing is unlinked for an uncommitted mark); a file that
        cannot be unlinked is listed in ``errors`` and retried on the next run.
        """
        started = time.perf_counter()
        report = RetentionReport()
        if not self._swept:
            report.swept = self._sweep(report)
            self._swept = True
        self._retry_unlinks(report)
        base = deletable(self._protection())
        now = self.clock.now()
        for sensors, policy in self._policies():
            rule = self._policy_clause(policy)
            if rule is None:
                continue
            clause, reason = rule
            with self.db.session() as session:
                marked = mark_deleted(session, and_(base, sensors, clause), reason=reason, now=now)
            self._unlink([Deleted(*m) for m in marked], reason, report)
        cfg = self.config.retention
        if cfg.max_bytes is not None:
            with self.db.session() as session:
                excess = present_bytes(session) - int(cfg.max_bytes)
                marked = mark_oldest_deleted(session, base, excess, reason="max_bytes", now=now)
            self._unlink([Deleted(*m) for m in marked], "max_bytes", report)
        for _ in range(MIN_FREE_ROUNDS):
            usage = self._usage(report)
            if usage is None or usage.free >= cfg.min_free:
                break
            with self.db.session() as session:
                marked = mark_oldest_deleted(
                    session, base, int(cfg.min_free) - usage.free, reason="min_free", now=now
                )
            self._unlink([Deleted(*m) for m in marked], "min_free", report)
            if not marked:
                break
        if cfg.readings_max_age is not None:
            with self.db.session() as session:
                report.readings_deleted = delete_older_than(
                    session, now - timedelta(seconds=cfg.readings_max_age)
                )
        self._conclude(report)
        report.seconds = round(time.perf_counter() - started, 4)
        report.file_seconds = round(report.file_seconds, 4)
        if report.total_deleted:
            log.info(
                "retention deleted %d recording%s, %s: %s",
                report.total_deleted,
                "" if report.total_deleted == 1 else "s",
                format_bytes(report.freed_bytes),
                report.deleted,
            )
        return report

    def _usage(self, report: RetentionReport) -> Any:
        try:
            usage = self.disk_usage(self.home.root)
        except OSError as error:
            report.errors.append(f"disk usage of {self.home.root}: {error}")
            return None
        report.disk_free, report.disk_total = int(usage.free), int(usage.total)
        return usage

    def _conclude(self, report: RetentionReport) -> None:
        """Measure, work out what is still short, record disk_low / disk_ok once."""
        cfg = self.config.retention
        usage = self._usage(report)
        with self.db.session() as session:
            report.data_bytes = present_bytes(session)
            disk_short = over_quota = 0
            if usage is not None:
                disk_short = max(0, int(cfg.min_free) - int(usage.free))
                report.blocked_sensors = [
                    s.name for s in self.config.sensors if s.enabled and usage.free < s.min_free
                ]
            if cfg.max_bytes is not None:
                over_quota = max(0, report.data_bytes - int(cfg.max_bytes))
            short = max(disk_short, over_quota)
            report.short_bytes = short
            low = short > 0 or bool(report.blocked_sensors)
            last = last_event_kind(session, source=EVENT_SOURCE, kinds=("disk_low", "disk_ok"))
            if low and last != "disk_low":
                blocked = ", ".join(report.blocked_sensors) or "none yet"
                what = []
                if disk_short:
                    what.append(f"free space {disk_short} bytes short of retention.min_free")
                if over_quota:
                    what.append(f"data {over_quota} bytes over retention.max_bytes")
                if not what:
                    what.append("free space below a sensor's min_free")
                record_event(
                    session,
                    kind="disk_low",
                    source=EVENT_SOURCE,
                    message=f"{' and '.join(what)}, and nothing left that retention may delete "
                    "(the rest is not yet processed, not yet uploaded, pinned or among the best "
                    f"per label); recording stops below each sensor's min_free (stopped: "
                    f"{blocked}). Free space, pin less, or lower retention.best_per_label",
                    now=self.clock.now(),
                    station_id=self.config.station.id,
                    destinations=self.config.destinations_for("event"),
                    severity="error",
                    data={
                        "short_bytes": short,
                        "disk_short_bytes": disk_short,
                        "over_quota_bytes": over_quota,
                        "disk_free": report.disk_free,
                        "data_bytes": report.data_bytes,
                        "blocked_sensors": report.blocked_sensors,
                    },
                )
                report.event = "disk_low"
            elif not low and last == "disk_low":
                record_event(
                    session,
                    kind="disk_ok",
                    source=EVENT_SOURCE,
                    message="disk space is back above the retention quotas",
                    now=self.clock.now(),
                    station_id=self.config.station.id,
                    destinations=self.config.destinations_for("event"),
                    data={"disk_free": report.disk_free, "data_bytes": report.data_bytes},
                )
                report.event = "disk_ok"

    # -- files -----------------------------------------------------------------------------
    def _unlink(self, marked: list[Deleted], reason: str, report: RetentionReport) -> None:
        if not marked:
            return
        started = time.perf_counter()
        report.deleted[reason] = report.deleted.get(reason, 0) + len(marked)
        for item in marked:
            report.freed_bytes += item.bytes
            if self._remove(item.path, report):
                report.unlinked += 1
        report.file_seconds += time.perf_counter() - started

    def _remove(self, relative: str, report: RetentionReport) -> bool:
        try:
            os.unlink(os.path.join(self._root, relative))
        except FileNotFoundError:
            return False
        except OSError as error:
            self._retry.add(relative)
            report.errors.append(f"unlink {relative}: {error}")
            return False
        self._retry.discard(relative)
        self._remove_thumbnails(relative)
        return True

    def _remove_thumbnails(self, relative: str) -> None:
        """Delete the thumbnails models made of the chunk at ``relative``
        (``thumbnails/<sensor>/<date>/<stem>.<processor>.jpg``, :attr:`StationHome.thumbnails`)."""
        rel = Path(relative)
        if rel.parts[:1] != ("data",):
            return
        folder = Path(self._root, "thumbnails", *rel.parts[1:-1])
        for thumbnail in folder.glob(f"{glob.escape(rel.stem)}.*.jpg"):
            thumbnail.unlink(missing_ok=True)

    def _retry_unlinks(self, report: RetentionReport) -> None:
        for relative in sorted(self._retry):
            if self._remove(relative, report):
                report.unlinked += 1

    def _sweep(self, report: RetentionReport) -> int:
        """Remove files under ``data/`` whose rows are already marked deleted (crash leftovers).

        One walk of the data folder and one query of the deleted rows' paths (set-based).
        """
        started = time.perf_counter()
        prefix = len(self._root) + 1
        present = {
            os.path.join(folder, name)[prefix:]
            for folder, _dirs, files in os.walk(self.home.data)
            for name in files
        }
        report.file_seconds += time.perf_counter() - started
        if not present:
            return 0
        with self.db.session() as session:
            leftovers = set(deleted_paths(session, among=present))
        return sum(1 for path in sorted(leftovers) if self._remove(path, report))

    # -- loop ------------------------------------------------------------------------------
    def low_disk(self) -> bool:
        """True when the disk of the home has less free space than ``retention.min_free``."""
        try:
            return int(self.disk_usage(self.home.root).free) < self.config.retention.min_free
        except OSError:
            return False

    def run(self, stop: threading.Event, *, check_every: float = 60.0) -> None:
        """Run every ``retention.interval`` seconds until ``stop`` is set, and early when the
        free space (checked every ``check_every`` seconds) drops below ``retention.min_free``
        (but not more often than every ``check_every``)."""
        interval = self.config.retention.interval
        while not stop.is_set():
            try:
                report = self.run_once()
                low = report.short_bytes > 0
            except Exception:
                log.exception("retention run failed; retrying in %.0f s", interval)
                low = True
            deadline = self.clock.monotonic() + interval
            while not stop.is_set():
                remaining = deadline - self.clock.monotonic()
                if remaining <= 0:
                    break
                if self.clock.wait(stop, min(remaining, check_every)):
                    return
                if not low and self.low_disk():
                    break
