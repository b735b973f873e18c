"""Retention on a real small filesystem: a 6 MB tmpfs holding the whole station home.

Needs permission to mount (root); skipped otherwise. The disk numbers are the kernel's
(``shutil.disk_usage``), the database lives on the same small disk.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from fieldstation.clock import VirtualClock
from fieldstation.home import StationHome
from fieldstation.recording.disk import DiskGuard
from fieldstation.retention import RetentionJob
from fieldstation.store import open_database
from fieldstation.store.events import record_event
from fieldstation.store.models import Delivery, Event, Recording
from fieldstation.store.outbox import enqueue

KB = 1024


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[StationHome]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield StationHome(mount / "home").ensure()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_quota_and_disk_low_on_a_real_small_disk(
    small_home: StationHome, make_rows: Any, station_for: Any
) -> None:
    home = small_home
    clock = VirtualClock(datetime(2026, 6, 1, tzinfo=UTC))
    db = open_database(home.database)
    try:
        config = station_for(
            home, sensor_min_free=1024 * KB, retention={"min_free": 2048 * KB, "interval": 60}
        )
        guard = DiskGuard(home.root, config.sensors[0].min_free)
        rows = make_rows(db, home, clock)
        job = RetentionJob(config, db, home, clock)
        kept = [rows.recording(size=256 * KB, state="recorded") for _ in range(4)]
        pinned = rows.recording(size=256 * KB, pinned=True)
        while shutil.disk_usage(home.root).free > 1200 * KB:
            rows.recording(size=256 * KB)
        report = job.run_once()
        free = shutil.disk_usage(home.root).free
        assert free >= 2048 * KB and report.short_bytes == 0, report
        assert report.deleted.get("min_free", 0) >= 3
        assert guard.may_start()

        # the uplink is down: every processed recording waits for its notice to be delivered,
        # and new, unprocessed recordings fill the disk: nothing deletable is left
        with db.session() as session:
            waiting = list(
                session.scalars(
                    select(Recording.id).where(
                        Recording.file_state == "present", Recording.state == "processed"
                    )
                )
            )
            for rid in waiting:
                enqueue(
                    session,
                    kind="recording",
                    body={"id": rid},
                    destinations=["local"],
                    now=clock.now(),
                    station_id="default",
                    recording_id=rid,
                )
        filler = []
        while shutil.disk_usage(home.root).free > 700 * KB:
            filler.append(rows.recording(size=256 * KB, state="recorded"))
        report = job.run_once()
        assert report.event == "disk_low" and report.blocked_sensors == ["mic"]
        assert report.deleted == {} and report.short_bytes > 0
        assert not guard.may_start()  # recording stops; the database still works:
        with db.session() as session:
            record_event(
                session,
                kind="probe",
                source="test",
                message="db ok",
                now=clock.now(),
                station_id="default",
                destinations=["local"],
            )
        with db.session() as session:
            present = set(
                session.scalars(select(Recording.id).where(Recording.file_state == "present"))
            )
        assert set(kept) | {pinned} | set(filler) | set(waiting) <= present

        # the uplink is back (notices delivered): retention frees space, recording resumes
        with db.session() as session:
            session.execute(update(Delivery).values(state="sent"))
        report = job.run_once()
        assert report.event == "disk_ok" and guard.may_start()
        assert shutil.disk_usage(home.root).free >= 2048 * KB
        with db.session() as session:
            kinds = list(session.scalars(select(Event.kind).order_by(Event.id)))
            assert kinds == ["disk_low", "probe", "disk_ok"]
            survivors = set(
                session.scalars(select(Recording.id).where(Recording.file_state == "present"))
            )
            assert set(kept) | {pinned} | set(filler) <= survivors
            assert session.scalar(select(func.count(Recording.id))) == rows.count
    finally:
        db.dispose()
