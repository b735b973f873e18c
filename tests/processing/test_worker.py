"""The processor job against a real station database and real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from fieldstation.clock import VirtualClock
from fieldstation.processing.model import ModelError, ModelOutput, RecordingInput
from fieldstation.processing.worker import ProcessorWorker, run_processor
from fieldstation.store import processing as repo
from fieldstation.store.models import Delivery, Detection, Event, Message, ModelRun, Recording

ONSETS = [1.0, 3.2, 6.5]


def counts(db: Any) -> dict[str, int]:
    with db.session() as s:
        return {
            name: int(s.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in [
                ("runs", ModelRun),
                ("detections", Detection),
                ("messages", Message),
                ("deliveries", Delivery),
            ]
        }


def recording(db: Any, rid: int) -> Recording:
    with db.session() as s:
        row = s.get(Recording, rid)
        assert row is not None
        s.expunge(row)
        return row


def test_processes_a_recording_in_one_transaction(make_station, chirp_signal) -> None:
    station = make_station()
    rid = station.add_recording(chirp_signal(8.0, ONSETS, seed=1))
    progress: list[tuple[str, dict[str, Any]]] = []
    ctx = station.context(progress=progress)
    result = ProcessorWorker(ctx, "energy").step()
    assert result.outcome == "processed" and result.detections == 3
    row = recording(station.db, rid)
    assert row.state == "processed" and row.claimed_by is None and row.processed_at is not None
    with station.db.session() as s:
        dets = s.scalars(select(Detection).order_by(Detection.start)).all()
        for det, onset in zip(dets, ONSETS, strict=True):
            assert abs(det.start - onset) <= 0.01
            assert det.detected_at == row.started_at + timedelta(seconds=det.start)
        message = s.scalars(select(Message)).one()
        assert (message.kind, message.recording_id) == ("detection", rid)
        body = json.loads(message.payload)["body"]
        assert (body["recording_id"], body["processor"], body["model"]) == (rid, "energy", "energy")
        assert [d["start"] for d in body["detections"]] == [d.start for d in dets]
        assert body["detections"][0]["detected_at"] == dets[0].detected_at.isoformat()
        assert [d.destination for d in message.deliveries] == ["local"]
        run = s.scalars(select(ModelRun)).one()
        assert (run.status, run.model, run.n_detections) == ("ok", "energy", 3)
    assert [w for w, _ in progress] == ["claimed", "processed"]
    assert progress[1][1] == {"recording_id": rid, "detections": 3}
    assert ProcessorWorker(ctx, "energy").step().outcome == "idle"


def test_two_processors_take_turns(make_station, chirp_signal) -> None:
    station = make_station(
        processors=[
            {"name": "low", "model": "energy", "low": 1000, "high": 7000},
            {"name": "high", "model": "energy", "low": 4000, "high": 12000, "label": "hi"},
            {"name": "other", "model": "energy", "enabled": False},
        ]
    )
    rid = station.add_recording(chirp_signal(5.0, [1.0], seed=2))
    ctx = station.context()
    assert ProcessorWorker(ctx, "low").step().outcome == "processed"
    assert recording(station.db, rid).state == "recorded"  # "high" still has to run
    assert ProcessorWorker(ctx, "low").step().outcome == "idle"
    assert ProcessorWorker(ctx, "high").step().outcome == "processed"
    assert recording(station.db, rid).state == "processed"
    with station.db.session() as s:
        assert sorted(s.scalars(select(ModelRun.processor))) == ["high", "low"]
        assert sorted(s.scalars(select(Detection.label))) == ["energy", "hi"]


def test_filters_skip_without_running_the_model(make_station, chirp_signal) -> None:
    station = make_station(
        processors=[{"name": "energy", "model": "energy", "filters": {"min_duration": 10}}]
    )
    rid = station.add_recording(chirp_signal(5.0, [1.0], seed=3))
    result = ProcessorWorker(station.context(), "energy").step()
    assert result.outcome == "skipped"
    assert recording(station.db, rid).state == "processed"
    with station.db.session() as s:
        run = s.scalars(select(ModelRun)).one()
        assert run.status == "skipped" and "min_duration" in (run.error or "")
    assert counts(station.db)["detections"] == 0


def test_cleaners_drop_low_scores(make_station, chirp_signal) -> None:
    station = make_station(
        processors=[{"name": "energy", "model": "energy", "cleaners": {"min_score": 0.999}}]
    )
    station.add_recording(chirp_signal(5.0, [1.0], seed=4, snr_db=20))
    assert ProcessorWorker(station.context(), "energy").step().detections == 0
    assert counts(station.db)["messages"] == 0


class Flaky:
    name = "flaky"
    version = "1"
    sample_rate = None

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def run(self, recording: RecordingInput) -> ModelOutput:
        if self.failures > 0:
            self.failures -= 1
            raise ModelError(f"boom ({self.failures} left)")
        return ModelOutput()


def test_errors_are_retried_then_fail(make_station, chirp_signal) -> None:
    station = make_station(processors=[{"name": "energy", "model": "energy", "max_attempts": 2}])
    ok = station.add_recording(chirp_signal(2.0, [], seed=5))
    ctx = station.context()
    worker = ProcessorWorker(ctx, "energy", Flaky(1))
    assert worker.step().outcome == "retry"
    assert recording(station.db, ok).last_error == "ModelError: boom (0 left)"
    assert worker.step().outcome == "processed"
    bad = station.add_recording(chirp_signal(2.0, [], seed=6))
    worker = ProcessorWorker(ctx, "energy", Flaky(5))
    assert [worker.step().outcome for _ in range(3)] == ["retry", "failed", "idle"]
    row = recording(station.db, bad)
    assert (row.state, row.attempts) == ("failed", 2)
    assert "boom" in (row.last_error or "")


def test_undecodable_file_is_quarantined_at_once(make_station, chirp_signal) -> None:
    station = make_station()
    rid = station.add_recording(raw=b"RIFF not really a wav file" * 10)
    before = recording(station.db, rid).path
    progress: list[tuple[str, dict[str, Any]]] = []
    result = ProcessorWorker(station.context(progress=progress), "energy").step()
    assert result.outcome == "quarantined"
    row = recording(station.db, rid)
    assert row.state == "quarantined" and row.attempts == 1
    assert row.path.startswith("quarantine/") and row.extra["quarantined_from"] == before
    assert (station.home.root / row.path).exists()
    assert not (station.home.root / before).exists()
    assert progress[-1][0] == "failed" and progress[-1][1]["final"] is True
    with station.db.session() as s:
        assert s.scalars(select(Event.kind)).all() == ["recording_quarantined"]
    assert ProcessorWorker(station.context(), "energy").step().outcome == "idle"


def test_a_recording_whose_file_is_gone_fails_at_once_as_missing(
    make_station, chirp_signal
) -> None:
    station = make_station()
    rid = station.add_recording(chirp_signal(2.0, ONSETS[:1], seed=1))
    (station.home.root / recording(station.db, rid).path).unlink()
    result = ProcessorWorker(station.context(), "energy").step()
    assert result.outcome == "missing" and "FileNotFoundError" in (result.error or "")
    row = recording(station.db, rid)
    assert (row.state, row.file_state, row.delete_reason, row.attempts) == (
        "failed",
        "missing",
        "missing",
        1,
    )
    assert row.claimed_by is None and row.deleted_at is not None
    with station.db.session() as s:
        assert s.scalars(select(Event.kind)).all() == ["recording_missing"]
    assert ProcessorWorker(station.context(), "energy").step().outcome == "idle"


def test_a_worker_whose_lease_was_taken_stores_nothing(make_station, chirp_signal) -> None:
    station = make_station(processors=[{"name": "energy", "model": "energy", "lease": 60}])
    rid = station.add_recording(chirp_signal(5.0, ONSETS[:1], seed=7))
    clock = VirtualClock(datetime(2026, 6, 1, 6, tzinfo=UTC))
    slow = ProcessorWorker(station.context(clock=clock), "energy")
    claimed = slow.claim()
    assert claimed is not None
    clock.advance(61)  # the slow worker's lease expires; another takes over
    assert ProcessorWorker(station.context(clock=clock), "energy").step().outcome == "processed"
    assert slow.process(*claimed).outcome == "lost"
    assert counts(station.db) == {"runs": 1, "detections": 1, "messages": 1, "deliveries": 1}
    assert recording(station.db, rid).attempts == 2


def test_a_backlog_claims_ahead_in_the_commit_and_gives_the_claim_back_on_stop(
    make_station, chirp_signal
) -> None:
    station = make_station()
    rids = [station.add_recording(chirp_signal(2.0, ONSETS[:1], seed=i)) for i in range(5)]
    worker = ProcessorWorker(station.context(), "energy")
    assert worker.step().recording_id == rids[0]  # first step: no backlog known yet
    assert recording(station.db, rids[1]).state == "recorded"
    assert worker.step().recording_id == rids[1]  # work twice in a row: a backlog
    ahead = recording(station.db, rids[2])
    assert (ahead.state, ahead.attempts) == ("processing", 1)  # claimed with rids[1]'s results
    assert ahead.claimed_by is not None and ahead.claimed_by.startswith("energy@")
    assert recording(station.db, rids[3]).state == "recorded"
    worker.release()
    given_back = recording(station.db, rids[2])
    assert (given_back.state, given_back.attempts, given_back.claimed_by) == ("recorded", 0, None)
    other = ProcessorWorker(station.context(), "energy")
    assert [other.step().recording_id for _ in range(3)] == rids[2:]
    assert recording(station.db, rids[4]).attempts == 1  # claimed ahead once, processed once
    assert worker.step().outcome == "idle"  # nothing left, and nothing held ahead
    assert counts(station.db)["runs"] == 5


def test_a_worker_coming_out_of_idle_does_not_claim_ahead(make_station, chirp_signal) -> None:
    station = make_station()
    worker = ProcessorWorker(station.context(), "energy")
    first = station.add_recording(chirp_signal(2.0, ONSETS[:1], seed=1))
    assert worker.step().recording_id == first
    assert worker.step().outcome == "idle"
    second, third = (station.add_recording(chirp_signal(2.0, [], seed=i)) for i in (2, 3))
    assert worker.step().recording_id == second  # just out of idle: no backlog known
    assert recording(station.db, third).state == "recorded"


def test_claims_are_exclusive_across_threads(make_station, chirp_signal) -> None:
    station = make_station()
    ids = [station.add_recording(chirp_signal(0.5, [], seed=i)) for i in range(12)]
    claimed: list[int] = []
    lock = threading.Lock()

    def grab() -> None:
        worker = ProcessorWorker(station.context(), "energy")
        while (c := worker.claim()) is not None:
            with lock:
                claimed.append(c[0].id)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ids


def test_run_processor_reports_idle_and_stops(make_station, chirp_signal) -> None:
    station = make_station()
    station.add_recording(chirp_signal(2.0, [0.5], seed=8))
    progress: list[tuple[str, dict[str, Any]]] = []
    ctx = station.context(progress=progress)

    def stop_when_idle(what: str, details: dict[str, Any]) -> None:
        progress.append((what, details))
        if what == "idle":
            ctx.stop.set()

    ctx.progress = stop_when_idle
    run_processor(ctx, "energy")
    assert [w for w, _ in progress] == ["claimed", "processed", "idle"]
    assert progress[-1][1] == {"pending": 0}


CHILD = textwrap.dedent(
    """
    import sys, time, threading
    from pathlib import Path
    import json
    from fieldstation.config import parse_config
    from fieldstation.home import StationHome
    from fieldstation.job import JobContext
    from fieldstation.processing.energy import EnergyDetector
    from fieldstation.processing.worker import run_processor

    marker = Path(sys.argv[2])

    class Stuck(EnergyDetector):
        def run(self, recording):
            output = super().run(recording)
            partial = marker.with_suffix(".part")
            partial.write_text(str(recording.recording_id))
            partial.rename(marker)  # whole or absent: the test reads it once it exists
            time.sleep(600)  # killed here, after the model ran, before the commit
            return output

    config = parse_config(json.loads(Path(sys.argv[1]).read_text()))
    ctx = JobContext(config=config, home=StationHome(config.home_path()), deployment_id=1)
    run_processor(ctx, "energy", model_factory=lambda cfg: Stuck(cfg))
    """
)


def test_sigkill_mid_run_processes_exactly_once(make_station, chirp_signal, tmp_path: Path) -> None:
    lease = 600.0  # far beyond how long a loaded machine takes from the claim to the checks
    station = make_station(processors=[{"name": "energy", "model": "energy", "lease": lease}])
    rid = station.add_recording(chirp_signal(8.0, ONSETS, seed=9))
    toml = tmp_path / "station.json"
    toml.write_text(json.dumps(station.data))
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(toml), str(marker)], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the child never ran the model"
            time.sleep(0.02)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert marker.read_text() == str(rid)
    row = recording(station.db, rid)
    assert (row.state, row.attempts) == ("processing", 1)
    assert counts(station.db)["runs"] == 0
    # before the lease expires nobody takes it; after, another worker finishes it once
    now = VirtualClock(datetime.now(UTC))
    assert ProcessorWorker(station.context(clock=now), "energy").step().outcome == "idle"
    later = VirtualClock(datetime.now(UTC) + timedelta(seconds=lease + 1))
    worker = ProcessorWorker(station.context(clock=later), "energy")
    assert worker.step().outcome == "processed"
    assert worker.step().outcome == "idle"
    assert counts(station.db) == {"runs": 1, "detections": 3, "messages": 1, "deliveries": 1}
    row = recording(station.db, rid)
    assert (row.state, row.attempts) == ("processed", 2)


def test_message_ids_are_deterministic(make_station, chirp_signal) -> None:
    station = make_station()
    rid = station.add_recording(chirp_signal(8.0, ONSETS, seed=10))
    ProcessorWorker(station.context(), "energy").step()
    with station.db.session() as s:
        row = s.get(Recording, rid)
        assert row is not None
        expected = repo.detection_message_id(station.config.station.id, row, "energy")
        assert s.scalars(select(Message.message_id)).one() == expected


def test_a_recording_that_kills_every_worker_ends_failed(make_station, chirp_signal) -> None:
    station = make_station(
        processors=[{"name": "energy", "model": "energy", "lease": 60, "max_attempts": 2}]
    )
    rid = station.add_recording(chirp_signal(2.0, [], seed=11))
    clock = VirtualClock(datetime(2026, 6, 1, 6, tzinfo=UTC))
    for _ in range(2):  # each worker claims it and "dies" (never completes)
        assert ProcessorWorker(station.context(clock=clock), "energy").claim() is not None
        clock.advance(60)  # lease_expires_at <= now: expired
    assert ProcessorWorker(station.context(clock=clock), "energy").step().outcome == "idle"
    row = recording(station.db, rid)
    assert (row.state, row.attempts, row.claimed_by) == ("failed", 2, None)
    assert "worker died?" in (row.last_error or "")


CHILD_PLAIN = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from fieldstation.config import parse_config
    from fieldstation.home import StationHome
    from fieldstation.job import JobContext
    from fieldstation.processing.worker import run_processor

    config = parse_config(json.loads(Path(sys.argv[1]).read_text()))
    ctx = JobContext(config=config, home=StationHome(config.home_path()), deployment_id=1)
    run_processor(ctx, "energy")
    """
)


def test_sigkill_at_an_arbitrary_moment_loses_and_duplicates_nothing(
    make_station, chirp_signal, tmp_path: Path
) -> None:
    lease = 600.0  # far beyond how long a loaded machine takes from the claim to the checks
    station = make_station(processors=[{"name": "energy", "model": "energy", "lease": lease}])
    ids = [station.add_recording(chirp_signal(8.0, ONSETS, seed=20 + i)) for i in range(8)]
    config_file = tmp_path / "station.json"
    config_file.write_text(json.dumps(station.data))
    child = subprocess.Popen([sys.executable, "-c", CHILD_PLAIN, str(config_file)])
    try:
        deadline = time.monotonic() + 60
        while counts(station.db)["runs"] < 3:  # killed while working on the 4th or later
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    later = VirtualClock(datetime.now(UTC) + timedelta(seconds=lease + 1))
    worker = ProcessorWorker(station.context(clock=later), "energy")
    while worker.step().outcome != "idle":
        pass
    with station.db.session() as s:
        assert {r.state for r in s.scalars(select(Recording))} == {"processed"}
        runs = s.execute(
            select(ModelRun.recording_id, func.count()).group_by(ModelRun.recording_id)
        )
        assert dict(runs.all()) == dict.fromkeys(ids, 1)
        per_recording = s.execute(
            select(Detection.recording_id, func.count()).group_by(Detection.recording_id)
        )
        assert dict(per_recording.all()) == dict.fromkeys(ids, len(ONSETS))
        messages = s.execute(select(Message.recording_id, Message.message_id)).all()
        assert sorted(r for r, _ in messages) == ids
        assert len({m for _, m in messages}) == len(ids)
