"""A real Recorder on a disk that fills: the chunk closes with ``disk_low``, no chunk starts,
retention cannot help while everything is unprocessed, frees space once it may, and
recording resumes by itself; the database keeps working throughout.

The recorder is ``fieldstation.recording.job.run_recorder`` on the synthetic sensor and a
virtual clock; the disk is an injected disk-usage function shared by the recorder's guard and
the retention job: the files under ``data/`` plus ``other`` bytes of something else.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import select, update

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, config_hash
from fieldstation.home import StationHome
from fieldstation.job import JobContext
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.recording.job import run_recorder
from fieldstation.retention import RetentionJob
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.store.events import record_event
from fieldstation.store.models import Event, Recording

CAPACITY = 2_000_000
SENSOR_MIN_FREE = 500_000  # the recorder's guard; a chunk in progress closes below half of it
RETENTION_MIN_FREE = 550_000
CHUNK_BYTES = 48_000 * 2 * 2 + 44  # 2 s of 48 kHz int16 mono, WAV


class Usage(NamedTuple):
    total: int
    used: int
    free: int


class Disk:
    """``shutil.disk_usage`` of a small disk: recording files under ``data/`` plus ``other``."""

    def __init__(self, home: StationHome) -> None:
        self.data = Path(home.data)
        self.other = 0
        self._fill: tuple[int, int] | None = None

    def fill_after(self, calls: int, other: int) -> None:
        """After ``calls`` more measurements, something else takes ``other`` bytes."""
        self._fill = (calls, other)

    def __call__(self, path: object) -> Usage:
        if self._fill is not None:
            calls, other = self._fill
            if calls == 0:
                self.other, self._fill = other, None
            else:
                self._fill = (calls - 1, other)
        used = self.other + sum(p.stat().st_size for p in self.data.rglob("*") if p.is_file())
        return Usage(CAPACITY, used, max(0, CAPACITY - used))


def test_recorder_stops_with_disk_low_and_resumes_after_retention_frees_space(
    home: StationHome, db: Database, station_for: Any
) -> None:
    config: StationConfig = station_for(
        home,
        sensor_min_free=SENSOR_MIN_FREE,
        retention={"min_free": RETENTION_MIN_FREE, "default": {"keep": "all"}},
    )
    sensor = config.sensors[0]
    sensor.schedule = None  # record continuously
    sensor.format = "wav"  # type: ignore[attr-defined]
    sensor.chunk = 2.0  # type: ignore[attr-defined]
    sensor.block = 0.1  # type: ignore[attr-defined]
    clock = VirtualClock()
    disk = Disk(home)
    retention = RetentionJob(config, db, home, clock, disk_usage=disk)
    with db.session() as session:
        deployment = start_deployment(
            session,
            station_id=config.station.id,
            config_hash=config_hash(config),
            config=config.model_dump(mode="json"),
            version="test",
            now=clock.now(),
        )
    reports: list[Any] = []
    chunks: list[int] = []
    waits = 0

    def progress(what: str, details: dict[str, Any]) -> None:
        nonlocal waits
        if what == "chunk":
            chunks.append(details["recording_id"])
            if len(chunks) == 2:  # once chunk 3 has started, something else fills the disk
                disk.fill_after(1, CAPACITY - disk(home.root).used - 216_000)
            if len(chunks) == 4:  # the chunk after the pause: enough
                ctx.stop_reason = "stopped"
                ctx.stop.set()
        elif what == "waiting" and not ctx.stop.is_set():
            waits += 1
            if waits == 1:  # the recorder is paused: retention has nothing it may delete
                reports.append(retention.run_once())
                with db.session() as session:  # a processor catches up meanwhile
                    session.execute(update(Recording).values(state="processed"))
                with DeliveryLoop(config, db, clock, home) as loop:  # notices delivered
                    loop.run_once()
                reports.append(retention.run_once())  # now it frees the oldest

    ctx = JobContext(
        config=config,
        home=home,
        deployment_id=deployment.id,
        clock=clock,
        stop=threading.Event(),
        progress=progress,
        name="recorder:mic",
    )
    run_recorder(ctx, "mic", disk_usage=disk)

    with db.session() as session:
        rows = list(session.scalars(select(Recording).order_by(Recording.id)))
        events = [(e.source, e.kind) for e in session.scalars(select(Event).order_by(Event.id))]
    assert [r.id for r in rows] == chunks
    first, second, cut, resumed = rows
    assert first.end_reason == second.end_reason == "complete"
    assert cut.end_reason == "disk_low" and 0 < cut.frames < 96_000  # closed mid-chunk
    assert resumed.end_reason == "complete" and resumed.frames == 96_000
    assert resumed.started_at > cut.started_at  # a new session after the pause
    assert waits >= 1  # no chunk started while the disk was low

    blocked, freed = reports  # unprocessed and unsent: protected; then processed and sent
    assert blocked.deleted == {} and blocked.event == "disk_low"
    assert blocked.blocked_sensors == ["mic"] and blocked.short_bytes > 0
    assert freed.deleted == {"min_free": 2} and freed.event == "disk_ok"
    assert freed.disk_free is not None and freed.disk_free >= RETENTION_MIN_FREE
    assert [(r.file_state, r.delete_reason) for r in rows] == [
        ("deleted", "min_free"),
        ("deleted", "min_free"),
        ("present", None),
        ("present", None),
    ]
    assert not (home.root / first.path).exists() and (home.root / resumed.path).exists()
    assert events[:3] == [
        ("recorder:mic", "disk_low"),  # the recorder paused
        ("retention", "disk_low"),  # nothing deletable
        ("retention", "disk_ok"),  # freed
    ]
    with db.session() as session:  # no database error, before or after
        record_event(
            session,
            kind="probe",
            source="test",
            message="db ok",
            now=clock.now(),
            station_id=config.station.id,
            destinations=[],
        )
