"""Uploads that cannot succeed do not fill the disk: a permanent refusal of the hub (a file
above its ``max_bytes``, a revoked token, no upload endpoint) ends the row ``refused`` with one
warning event naming the setting to fix; a checksum refusal of a damaged file ends it
``corrupt``; ``max_age`` / ``max_attempts`` end it ``expired``; a fixed token works without a
restart; the ``min_free`` guard deletes unconfirmed recordings last, with a warning event; two
threads queueing the same recording share one row."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from fieldstation.clock import VirtualClock
from fieldstation.home import StationHome
from fieldstation.hub.db import open_hub_database
from fieldstation.hub.http import create_app
from fieldstation.hub.uploads import UploadsConfig
from fieldstation.retention import RetentionJob
from fieldstation.store import Database
from fieldstation.store.models import Event, Recording, Upload
from fieldstation.store.uploads import UploadSelection, queue_chosen
from fieldstation.testing.asgi import AsgiServer
from fieldstation.upload.job import UploadJob
from fieldstation.upload.queue import request_upload

UNREACHABLE = "http://127.0.0.1:9/uploads"


def uploads(db: Database) -> dict[int | None, Upload]:
    with db.session() as session:
        found = {u.recording_id: u for u in session.scalars(select(Upload))}
        session.expunge_all()
        return found


def events(db: Database, kind: str) -> list[Event]:
    with db.session() as session:
        found = list(session.scalars(select(Event).where(Event.kind == kind)))
        session.expunge_all()
        return found


def file_states(db: Database) -> dict[int, str]:
    with db.session() as session:
        return {r.id: r.file_state for r in session.scalars(select(Recording))}


def run(job: UploadJob, turns: int = 1) -> int:
    try:
        return sum(job.run_once() for _ in range(turns))
    finally:
        job.close()


def test_a_file_above_the_hubs_max_bytes_is_refused_once_and_retention_frees_it(
    make_hub: Any,
    make_station: Any,
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
) -> None:
    hub = make_hub(UploadsConfig(max_bytes=1500))
    big, bigger = rows.recording(2000), rows.recording(3000)
    config = make_station(url=hub.url, select="all")
    job = UploadJob(config, db, home, clock)
    assert run(job) == 0
    found = uploads(db)
    for recording in (big, bigger):
        assert found[recording].state == "refused"
        assert (found[recording].last_error or "").startswith("refused 413:")
    (warning,) = events(db, "upload_refused")  # one event for both
    assert warning.severity == "warning" and "max_bytes" in warning.message
    clock.advance(3 * 86400)
    assert run(UploadJob(config, db, home, clock)) == 0
    assert uploads(db)[big].attempts == 1  # final: never tried again
    RetentionJob(config, db, home, clock).run_once()  # keep = days 1: no longer protected
    assert file_states(db) == {big: "deleted", bigger: "deleted"}


def test_a_revoked_token_is_refused_and_a_fixed_token_works_without_restart(
    hub: Any,
    make_station: Any,
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    tmp_path: Path,
) -> None:
    token = tmp_path / "hub-token"
    token.write_text("fsh_revoked\n")
    token.chmod(0o600)
    recording = rows.recording(5000)
    config = make_station(url=hub.url, select="all", token=f"file:{token}")
    job = UploadJob(config, db, home, clock)
    try:
        assert job.run_once() == 0
        row = uploads(db)[recording]
        assert row.state == "refused" and (row.last_error or "").startswith("refused 401:")
        (warning,) = events(db, "upload_refused")
        assert "[upload] token" in warning.message
        token.write_text(hub.token + "\n")  # the operator fixes the file; no restart
        assert job.run_once() == 1
    finally:
        job.close()
    assert uploads(db)[recording].state == "sent"


def test_a_hub_without_the_upload_endpoint_refuses_for_good(
    make_station: Any,
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    monkeypatch.setenv("FIELDSTATION_TEST_UPLOAD_TOKEN", "fsh_x")
    hub_db = open_hub_database(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        with AsgiServer(create_app(hub_db)) as server:  # [uploads] enabled = false
            recording = rows.recording()
            config = make_station(url=f"{server.url}/uploads", select="all")
            assert run(UploadJob(config, db, home, clock)) == 0
    finally:
        hub_db.dispose()
    row = uploads(db)[recording]
    assert row.state == "refused" and (row.last_error or "").startswith("refused 404:")
    (warning,) = events(db, "upload_refused")
    assert "[upload] url" in warning.message and "[uploads]" in warning.message


def test_a_checksum_refusal_of_a_damaged_file_is_final_and_of_a_sound_one_retried(
    hub: Any, make_station: Any, db: Database, home: StationHome, clock: VirtualClock, rows: Any
) -> None:
    damaged = rows.recording(4000)
    config = make_station(url=hub.url, select="all")
    with db.session() as session:
        queue_chosen(session, UploadSelection.of(config.upload), clock.now())
        path = home.root / str(session.get(Recording, damaged).path)  # type: ignore[union-attr]
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # a flipped bit on the card
    path.write_bytes(bytes(data))
    assert run(UploadJob(config, db, home, clock)) == 0
    row = uploads(db)[damaged]
    assert row.state == "corrupt" and row.attempts == 1
    assert len(events(db, "upload_corrupt")) == 1

    sound = rows.recording(4000)

    def hub_says_mismatch(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(201, headers={"Upload-Offset": "0"})
        request.read()
        return httpx.Response(460, text="sha256 mismatch")

    transport = httpx.MockTransport(hub_says_mismatch)
    assert run(UploadJob(config, db, home, clock, transport=transport)) == 0
    row = uploads(db)[sound]
    assert row.state == "pending" and row.attempts == 1  # the file is sound: retried later
    assert len(events(db, "upload_corrupt")) == 1


def test_an_upload_gives_up_after_max_age_or_max_attempts(
    make_station: Any,
    db: Database,
    home: StationHome,
    clock: VirtualClock,
    rows: Any,
    monkeypatch: Any,
) -> None:
    monkeypatch.setenv("FIELDSTATION_TEST_UPLOAD_TOKEN", "fsh_x")
    old = rows.recording()
    config = make_station(url=UNREACHABLE, select="all", max_age="2d", retry_max=60)
    assert run(UploadJob(config, db, home, clock)) == 0
    assert uploads(db)[old].state == "pending"
    clock.advance(2 * 86400)
    assert run(UploadJob(config, db, home, clock)) == 0
    row = uploads(db)[old]
    assert row.state == "expired" and row.attempts == 2
    (warning,) = events(db, "upload_expired")
    assert "max_age" in warning.message

    capped = rows.recording()
    config = make_station(url=UNREACHABLE, select="all", max_attempts=2, retry_max=1)
    for _ in range(2):
        clock.advance(2)
        run(UploadJob(config, db, home, clock))
    assert uploads(db)[capped].state == "expired"
    clock.advance(3 * 86400)
    RetentionJob(config, db, home, clock).run_once()
    assert file_states(db) == {old: "deleted", capped: "deleted"}


def test_min_free_deletes_unconfirmed_uploads_last_with_a_warning(
    make_station: Any, db: Database, home: StationHome, clock: VirtualClock, rows: Any
) -> None:
    ids = [rows.recording(1000) for _ in range(3)]
    config = make_station(url=UNREACHABLE, select="all")  # keep = days 1: none is that old
    with db.session() as session:
        queue_chosen(session, UploadSelection.of(config.upload), clock.now())
        paths = [home.root / str(session.get(Recording, i).path) for i in ids]  # type: ignore[union-attr]
    min_free = int(config.retention.min_free)

    def disk_usage(_root: Any) -> Any:  # 1500 bytes short until files go
        gone = sum(1000 for p in paths if not p.exists())
        return SimpleNamespace(total=10 * min_free, used=0, free=min_free - 1500 + gone)

    report = RetentionJob(config, db, home, clock, disk_usage=disk_usage).run_once()
    assert report.deleted == {"min_free": 2}
    assert file_states(db) == {ids[0]: "deleted", ids[1]: "deleted", ids[2]: "present"}
    found = uploads(db)
    assert [found[i].state for i in ids] == ["missing", "missing", "pending"]
    assert "retention.min_free" in (found[ids[0]].last_error or "")
    (warning,) = events(db, "upload_dropped")
    assert warning.severity == "warning" and warning.data["recordings"] == ids[:2]


def test_two_threads_queueing_the_same_recording_share_one_row(
    db: Database, clock: VirtualClock, rows: Any
) -> None:
    first, second = rows.recording(), rows.recording()
    made: list[str] = []
    fired: list[bool] = []

    def looked(statement: str) -> bool:
        if fired or not statement.lstrip().upper().startswith("SELECT"):
            return False
        if "uploads" not in statement:
            return False
        fired.append(True)
        return True

    def other_thread_first(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if looked(statement):
            # the commands thread's request_upload commits between our look and our insert
            made.append(request_upload(db, recording_id=first, log_bundle=False, now=clock.now()))

    event.listen(db.engine, "after_cursor_execute", other_thread_first)
    try:
        with db.session() as session:
            assert queue_chosen(session, UploadSelection(select="all"), clock.now()) == 1
    finally:
        event.remove(db.engine, "after_cursor_execute", other_thread_first)
    found = uploads(db)
    assert set(found) == {first, second} and found[first].upload_id == made[0]

    third = rows.recording()
    made.clear()
    fired.clear()

    def job_first(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if looked(statement):
            with db.session() as session:  # the upload job queues it meanwhile
                made.append(str(queue_chosen(session, UploadSelection(select="all"), clock.now())))

    event.listen(db.engine, "after_cursor_execute", job_first)
    try:
        upload_id = request_upload(db, recording_id=third, log_bundle=False, now=clock.now())
    finally:
        event.remove(db.engine, "after_cursor_execute", job_first)
    assert made == ["1"]
    assert uploads(db)[third].upload_id == upload_id


def test_give_up_settings_are_checked(make_station: Any) -> None:
    from fieldstation.config import ConfigError

    assert make_station(url="http://hub/uploads").upload.max_age == 30 * 86400
    with pytest.raises(ConfigError, match="max_age"):
        make_station(url="http://hub/uploads", max_age=0)
    with pytest.raises(ConfigError, match="max_attempts"):
        make_station(url="http://hub/uploads", max_attempts=-1)
