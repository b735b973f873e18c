"""Retention: policies, quotas, protections, disk-low reporting and crash-safe deletion."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from fieldstation.clock import VirtualClock
from fieldstation.home import StationHome
from fieldstation.recording.disk import DiskGuard
from fieldstation.retention import RetentionJob
from fieldstation.store import Database
from fieldstation.store.models import Delivery, Event, Recording
from fieldstation.store.outbox import enqueue
from fieldstation.store.retention import mark_deleted

MB = 1_000_000


def states(db: Database) -> dict[int, tuple[str, str | None]]:
    with db.session() as session:
        return {r.id: (r.file_state, r.delete_reason) for r in session.scalars(select(Recording))}


def events(db: Database, kind: str) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count(Event.id)).where(Event.kind == kind)) or 0)


def announce(db: Database, clock: VirtualClock, recording_id: int) -> None:
    """A pending ``recording`` notice (as the processor would write it)."""
    with db.session() as session:
        enqueue(
            session,
            kind="recording",
            body={"id": recording_id},
            destinations=["local"],
            now=clock.now(),
            station_id="default",
            recording_id=recording_id,
        )


def test_small_disk_quota_protection_and_disk_low(
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    fake_disk: Any,
    make_station: Any,
) -> None:
    disk = fake_disk(10 * MB)
    config = make_station(
        sensor_min_free=2 * MB,
        retention={"min_free": 3 * MB, "best_per_label": 1, "protect_unsent": True},
    )
    job = RetentionJob(config, db, home, clock, disk_usage=disk)
    ids = [rows.recording(size=MB) for _ in range(4)]  # oldest: plain, deletable
    pinned = rows.recording(size=MB, pinned=True)
    unprocessed = rows.recording(size=MB, state="recorded")
    claimed = rows.recording(size=MB, state="processing")
    unsent = rows.recording(size=MB)
    announce(db, clock, unsent)
    best = rows.recording(size=MB)
    rows.detection(best, "Turdus merula", 0.9)
    rows.detection(ids[3], "Turdus merula", 0.4)
    assert disk(home.root).free == 1 * MB  # 9 files of 1 MB on 10 MB

    report = job.run_once()
    assert disk(home.root).free >= 3 * MB  # quota holds
    assert report.deleted == {"min_free": 2}
    after = states(db)
    assert after[ids[0]] == ("deleted", "min_free") and after[ids[1]] == ("deleted", "min_free")
    assert not (home.root / rows_path(db, ids[0])).exists()
    assert (home.root / rows_path(db, ids[2])).exists()
    assert report.short_bytes == 0 and report.blocked_sensors == [] and report.event is None

    # fill the disk with something retention does not own: everything deletable goes, still short
    disk.other = 6 * MB
    report = job.run_once()
    after = states(db)
    assert {after[i][0] for i in (pinned, unprocessed, claimed, unsent, best)} == {"present"}
    assert after[ids[2]][0] == after[ids[3]][0] == "deleted"
    for rid in (pinned, unprocessed, claimed, unsent, best):
        assert (home.root / rows_path(db, rid)).exists()
    free = disk(home.root).free
    assert free < 2 * MB and report.short_bytes == 3 * MB - free
    assert report.blocked_sensors == ["mic"] and report.event == "disk_low"
    # the recorder's own disk guard, on the same disk: no chunk starts (disk_low)
    guard = DiskGuard(home.root, config.sensors[0].min_free, disk_usage=disk)
    assert not guard.may_start()
    assert job.run_once().event is None  # reported once, not every run
    assert events(db, "disk_low") == 1

    # space returns: the guard clears, one disk_ok event
    disk.other = 0
    report = job.run_once()
    assert report.event == "disk_ok" and report.blocked_sensors == [] and report.short_bytes == 0
    assert guard.may_start()  # recording resumes
    assert events(db, "disk_ok") == 1
    with db.session() as session:  # rows are never removed
        assert session.scalar(select(func.count(Recording.id))) == 9


def rows_path(db: Database, recording_id: int) -> str:
    with db.session() as session:
        row = session.get(Recording, recording_id)
        assert row is not None
        return row.path


def test_delivered_notice_no_longer_protects(
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    fake_disk: Any,
    make_station: Any,
) -> None:
    config = make_station(retention={"min_free": 0, "max_bytes": 1000})
    first = rows.recording(size=1000)
    second = rows.recording(size=1000)
    announce(db, clock, first)
    job = RetentionJob(config, db, home, clock, disk_usage=fake_disk(10**9))
    report = job.run_once()
    assert states(db)[first][0] == "present" and states(db)[second] == ("deleted", "max_bytes")
    with db.session() as session:
        session.execute(update(Delivery).values(state="sent"))
    rows.recording(size=1000)
    report = job.run_once()
    assert states(db)[first] == ("deleted", "max_bytes") and report.data_bytes == 1000


def test_policies(
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    fake_disk: Any,
    make_station: Any,
) -> None:
    config = make_station(
        more_sensors=("old", "other"),
        retention={
            "min_free": 0,
            "default": {"keep": "all"},
            "sensors": {
                "mic": {"keep": "detections", "labels": ["bat"], "min_score": 0.5},
                "old": {"keep": "days", "days": 2},
            },
        },
    )
    none = rows.recording()
    weak = rows.recording()
    rows.detection(weak, "bat", 0.3)
    other_label = rows.recording()
    rows.detection(other_label, "bird", 0.9)
    kept = rows.recording()
    rows.detection(kept, "bat", 0.7)
    pending = rows.recording(state="recorded")
    failed = rows.recording(state="failed")
    aged = rows.recording(sensor="old", started_at=clock.now() - timedelta(days=3))
    young = rows.recording(sensor="old", started_at=clock.now() - timedelta(days=1))
    keep_all = rows.recording(sensor="other")
    report = RetentionJob(config, db, home, clock, disk_usage=fake_disk(10**9)).run_once()
    after = states(db)
    assert {i for i, s in after.items() if s[0] == "deleted"} == {none, weak, other_label, aged}
    assert after[none][1] == "no_detections" and after[aged][1] == "age"
    for survivor in (kept, pending, failed, young, keep_all):
        assert after[survivor] == ("present", None)
    assert report.deleted == {"no_detections": 3, "age": 1}
    assert report.unlinked == 4
    assert not (home.root / rows_path(db, none)).exists()
    with db.session() as session:
        row = session.get(Recording, none)
        assert row is not None and row.deleted_at == clock.now()


def test_crash_between_mark_and_unlink_is_swept(
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    fake_disk: Any,
    make_station: Any,
) -> None:
    config = make_station(retention={"min_free": 0})
    rid = rows.recording()
    path = home.root / rows_path(db, rid)
    with db.session() as session:  # marked and committed, then the process died
        mark_deleted(session, Recording.id == rid, reason="min_free", now=clock.now())
    assert path.exists()
    report = RetentionJob(config, db, home, clock, disk_usage=fake_disk(10**9)).run_once()
    assert report.swept == 1 and not path.exists()
    # and a row marked deleted whose file is already gone is fine too
    report = RetentionJob(config, db, home, clock, disk_usage=fake_disk(10**9)).run_once()
    assert report.swept == 0 and report.errors == []


def test_run_loop_runs_early_on_low_disk(
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    fake_disk: Any,
    make_station: Any,
) -> None:
    import threading

    config = make_station(retention={"min_free": 5 * MB, "interval": 3600})
    disk = fake_disk(10 * MB)
    runs: list[float] = []
    stop = threading.Event()

    class Counting(RetentionJob):
        def run_once(self) -> Any:
            runs.append(clock.monotonic())
            if len(runs) == 2:
                stop.set()
            report = super().run_once()
            if len(runs) == 1:
                for _ in range(6):
                    rows.recording(size=MB)  # the disk fills after the first run
            return report

    Counting(config, db, home, clock, disk_usage=disk).run(stop, check_every=60)
    assert runs[1] - runs[0] == 60  # not the full hour
    assert disk(home.root).free >= 5 * MB


def test_notices_dropped_by_the_cap_or_dead_still_protect(
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    fake_disk: Any,
    make_station: Any,
) -> None:
    """A full outbox drops recording notices first (lowest priority) and max_age dead-letters
    them: neither was uploaded, so the quota must not delete those recordings."""
    from fieldstation.store import outbox as store

    config = make_station(retention={"min_free": 0, "max_bytes": 0, "protect_unsent": True})
    expired, dropped_a, dropped_b, sent, silent = (rows.recording(size=1000) for _ in range(5))
    announce(db, clock, expired)
    with db.session() as session:
        assert store.expire(session, now=clock.now() + timedelta(days=31), max_age=30 * 86400)
    clock.advance(60)
    for rid in (dropped_a, dropped_b, sent):
        announce(db, clock, rid)
    with db.session() as session:
        ((delivery, _),) = [
            (d, m) for d, m in store.list_deliveries(session) if m.recording_id == sent
        ]
        store.mark_sent(session, [delivery.id], now=clock.now())
    with db.session() as session:  # heartbeats fill the outbox: the cap drops the notices
        size = store.pending_bytes(session)
        for i in range(2):
            store.enqueue(
                session,
                kind="heartbeat",
                body={"seq": i, "pad": "x" * 200},
                destinations=["local"],
                now=clock.now(),
                station_id="default",
                cap=store.OutboxCap(max_bytes=size, when_full="drop_oldest"),
            )
    with db.session() as session:
        notice_states = {
            m.recording_id: d.state
            for d, m in store.list_deliveries(session, limit=100)
            if m.kind == "recording"
        }
    assert notice_states == {
        expired: "dead",
        dropped_a: "dropped",
        dropped_b: "dropped",
        sent: "sent",
    }

    job = RetentionJob(config, db, home, clock, disk_usage=fake_disk(10**9))
    report = job.run_once()
    assert report.deleted == {"max_bytes": 2}
    after = states(db)
    assert after[sent] == ("deleted", "max_bytes") and after[silent] == ("deleted", "max_bytes")
    for protected in (expired, dropped_a, dropped_b):
        assert after[protected] == ("present", None)
        assert (home.root / rows_path(db, protected)).exists()

    # purging settled messages must not remove the dropped notices that protect these files
    with db.session() as session:
        store.purge_settled(session, before=clock.now() + timedelta(days=60))
    assert job.run_once().deleted == {}
    assert {states(db)[r][0] for r in (expired, dropped_a, dropped_b)} == {"present"}


def test_a_quota_held_by_protected_data_is_not_called_a_full_disk(
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    fake_disk: Any,
    make_station: Any,
) -> None:
    disk = fake_disk(100 * MB)  # plenty of free space
    config = make_station(retention={"min_free": MB, "max_bytes": MB})
    for _ in range(3):
        rows.recording(size=MB, state="recorded")  # not yet processed: protected
    report = RetentionJob(config, db, home, clock, disk_usage=disk).run_once()
    assert report.event == "disk_low" and report.short_bytes == 2 * MB
    with db.session() as session:
        event = session.scalars(select(Event).where(Event.kind == "disk_low")).one()
    assert event.message.startswith(f"data {2 * MB} bytes over retention.max_bytes")
    assert "free space" not in event.message.split(", and nothing")[0]
    assert event.data["over_quota_bytes"] == 2 * MB and event.data["disk_short_bytes"] == 0


def test_readings_older_than_readings_max_age_are_deleted(
    db: Database, home: StationHome, clock: VirtualClock, rows: Any, make_station: Any
) -> None:
    from fieldstation.store.models import Reading
    from fieldstation.store.readings import NewReading, insert_readings

    config = make_station(retention={"readings_max_age": "30d"})
    now = clock.now()
    with db.session() as session:
        insert_readings(
            session,
            deployment_id=rows.deployment_id,
            sensor="air",
            readings=[
                NewReading("temperature", "Cel", now - timedelta(days=days), 20.0 + days)
                for days in (0, 10, 29.9, 30.1, 90)
            ],
        )
    report = RetentionJob(config, db, home, clock).run_once()
    with db.session() as session:
        kept = sorted(session.scalars(select(Reading.value)))
    assert report.readings_deleted == 2
    assert kept == [20.0, 30.0, 49.9]


def test_a_deleted_chunk_takes_its_thumbnails_with_it(
    db: Database, home: StationHome, clock: VirtualClock, rows: Any, make_station: Any
) -> None:
    from pathlib import Path

    config = make_station(retention={"default": {"keep": "days", "days": 1}})
    old = rows.recording(started_at=clock.now() - timedelta(days=3))
    kept = rows.recording()
    with db.session() as session:
        paths = {r.id: Path(r.path) for r in session.scalars(select(Recording))}
    thumbs = {}
    for rid, rel in paths.items():
        folder = home.thumbnails.joinpath(*rel.parts[1:-1])
        folder.mkdir(parents=True, exist_ok=True)
        thumbs[rid] = [folder / f"{rel.stem}.{p}.jpg" for p in ("yard", "gate")]
        for thumb in thumbs[rid]:
            thumb.write_bytes(b"jpeg")
    other = home.thumbnails / "cam" / "x.yard.jpg"  # not of a deleted chunk
    other.parent.mkdir(parents=True)
    other.write_bytes(b"jpeg")
    RetentionJob(config, db, home, clock).run_once()
    assert states(db)[old] == ("deleted", "age")
    assert not any(t.exists() for t in thumbs[old])
    assert all(t.exists() for t in thumbs[kept]) and other.exists()
