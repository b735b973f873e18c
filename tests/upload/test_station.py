"""The station's half: ``[upload]`` config errors, what each selection queues, what retention
keeps while the hub has not confirmed, the ``upload`` command's ``request_upload`` (a
recording, a log bundle), the job's backoff stored in the row, the runtime's thread job."""

from __future__ import annotations

import tarfile
from typing import Any

import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.config import ConfigError
from fieldstation.home import StationHome
from fieldstation.retention import RetentionJob
from fieldstation.store import Database
from fieldstation.store.models import Recording, Upload
from fieldstation.store.retention import RecordingNotFoundError
from fieldstation.store.uploads import UploadSelection, queue_chosen
from fieldstation.upload.queue import RecordingGoneError, request_upload


def states(db: Database) -> dict[int, str]:
    with db.session() as session:
        return {r.id: r.file_state for r in session.scalars(select(Recording))}


def uploads(db: Database) -> dict[int | None, Upload]:
    with db.session() as session:
        found = {u.recording_id: u for u in session.scalars(select(Upload))}
        session.expunge_all()
        return found


def test_config_errors_name_the_key(make_station: Any) -> None:
    with pytest.raises(ConfigError, match="needs 'labels'"):
        make_station(url="http://hub/uploads", select="labels")
    with pytest.raises(ConfigError, match="only used with select = 'labels'"):
        make_station(url="http://hub/uploads", labels=["owl"])
    with pytest.raises(ConfigError, match="url"):
        make_station(url="hub/uploads")
    with pytest.raises(ConfigError, match="token"):
        make_station(url="http://hub/uploads", token="plain-secret")
    config = make_station(url="http://hub/uploads", select="labels", labels=["owl"])
    assert config.upload.select == "labels"


@pytest.mark.parametrize(
    ("select", "chosen"),
    [
        ("all", {1, 2, 3}),
        ("detections", {2, 3}),
        ("labels", {3}),
        ("pinned", set()),
        ("none", set()),
    ],
)
def test_selection_queues_and_retention_waits(
    select: str,
    chosen: set[int],
    make_station: Any,
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
) -> None:
    ids = [rows.recording(), rows.recording(), rows.recording()]
    assert ids == [1, 2, 3]
    rows.detection(2, "wren", 0.9)
    rows.detection(3, "owl", 0.9)
    upload: dict[str, Any] = {"url": "http://hub/uploads", "select": select}
    if select == "labels":
        upload["labels"] = ["owl"]
    config = make_station(**upload)
    clock.advance(3 * 86400)
    with db.session() as session:
        assert queue_chosen(session, UploadSelection.of(config.upload), clock.now()) == len(chosen)
    assert set(uploads(db)) == chosen
    RetentionJob(config, db, home, clock).run_once()
    assert {i for i, state in states(db).items() if state == "present"} == chosen
    # the hub confirms: retention deletes them too
    with db.session() as session:
        for row in session.scalars(select_uploads()):
            row.state = "sent"
    RetentionJob(config, db, home, clock).run_once()
    assert set(states(db).values()) == {"deleted"}


def select_uploads() -> Any:
    return select(Upload)


def test_chosen_but_not_queued_is_kept_and_unconfigured_upload_keeps_nothing(
    make_station: Any, db: Database, home: StationHome, clock: VirtualClock, rows: Any
) -> None:
    first, second = rows.recording(), rows.recording()
    rows.detection(first, "owl")
    clock.advance(3 * 86400)
    config = make_station(url="http://hub/uploads", select="detections")
    RetentionJob(config, db, home, clock).run_once()
    assert states(db) == {first: "present", second: "deleted"}
    without = config.model_copy(update={"upload": None})
    RetentionJob(without, db, home, clock).run_once()
    assert states(db) == {first: "deleted", second: "deleted"}


def test_request_upload_protects_and_is_idempotent(
    make_station: Any, db: Database, home: StationHome, clock: VirtualClock, rows: Any
) -> None:
    kept, other = rows.recording(), rows.recording()
    config = make_station(url="http://hub/uploads", select="none")
    upload_id = request_upload(db, recording_id=kept, log_bundle=False, now=clock.now())
    assert request_upload(db, recording_id=kept, log_bundle=False, now=clock.now()) == upload_id
    with pytest.raises(RecordingNotFoundError, match="no recording with id 99"):
        request_upload(db, recording_id=99, log_bundle=False, now=clock.now())
    with pytest.raises(ValueError, match="either recording_id or log_bundle"):
        request_upload(db, recording_id=kept, log_bundle=True, now=clock.now())
    with pytest.raises(ValueError, match="either recording_id or log_bundle"):
        request_upload(db, recording_id=None, log_bundle=False, now=clock.now())
    clock.advance(3 * 86400)
    RetentionJob(config, db, home, clock).run_once()
    assert states(db) == {kept: "present", other: "deleted"}
    with pytest.raises(RecordingGoneError, match="deleted"):
        request_upload(db, recording_id=other, log_bundle=False, now=clock.now())


def test_job_sends_requested_recording_and_log_bundle(
    hub: Any, make_station: Any, db: Database, home: StationHome, clock: VirtualClock, rows: Any
) -> None:
    from fieldstation.hub.models import UploadedFile
    from fieldstation.upload.job import UploadJob

    recording = rows.recording(200_000)
    home.logs.mkdir(parents=True, exist_ok=True)
    (home.logs / "station.log").write_text("started\n")
    config = make_station(url=hub.url, select="none")
    request_upload(db, recording_id=recording, log_bundle=False, now=clock.now())
    bundle_id = request_upload(db, recording_id=None, log_bundle=True, now=clock.now())
    job = UploadJob(config, db, home, clock)
    try:
        assert job.run_once() == 2
    finally:
        job.close()
    rows_now = uploads(db)
    assert rows_now[recording].state == "sent" and rows_now[recording].offset == 200_000
    assert rows_now[None].state == "sent" and rows_now[None].upload_id == bundle_id
    assert not (home.root / str(rows_now[None].path)).exists()  # the bundle is removed
    with hub.db.session() as session:
        stored = {f.kind: f for f in session.scalars(select(UploadedFile))}
        session.expunge_all()
    assert stored["recording"].recording_id == recording
    assert stored["recording"].media_type == "audio/wav"
    bundle = hub.service.store.path(stored["log_bundle"].location)
    with tarfile.open(bundle) as archive:
        assert "logs/station.log" in archive.getnames()


def test_failure_waits_in_the_row_and_missing_files(
    make_station: Any,
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fieldstation.upload.job import UploadJob

    monkeypatch.setenv("FIELDSTATION_TEST_UPLOAD_TOKEN", "fsh_x")

    first, second = rows.recording(), rows.recording()
    config = make_station(url="http://127.0.0.1:9/uploads", select="all", retry_initial=10)
    with db.session() as session:
        gone = session.get(Recording, second)
        assert gone is not None
        (home.root / gone.path).unlink()
    job = UploadJob(config, db, home, clock)
    try:
        assert job.run_once() == 0
        row = uploads(db)[first]
        assert row.state == "pending" and row.attempts == 1
        assert "unreachable" in (row.last_error or "")
        wait = (row.next_attempt_at - clock.now()).total_seconds()
        assert 5 <= wait <= 10  # equal jitter of the first retry
        assert uploads(db)[second].state == "missing"
        assert job.run_once() == 0  # not due yet: no new attempt
        assert uploads(db)[first].attempts == 1
    finally:
        job.close()


def test_station_runs_the_upload_thread_job(make_station: Any, home: StationHome) -> None:
    from fieldstation.runtime.station import THREAD_LIVENESS, Station

    config = make_station(url="http://hub/uploads")
    station = Station(config)
    names: list[str] = []

    def thread(name: str, factory: Any) -> str:
        names.append(name)
        return name

    station.db = object()  # type: ignore[assignment]
    assert station._upload_jobs(thread) == ["upload"]
    assert "upload" in THREAD_LIVENESS
    station.config = config.model_copy(update={"upload": None})
    assert station._upload_jobs(thread) == []
