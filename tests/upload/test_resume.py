"""A 50 MB recording uploaded to a real hub (uvicorn) through a TCP proxy that cuts the
connection at 5 random points arrives byte-identical (sha256), resuming each time from the
hub's offset; retention keeps the recording until the hub confirmed it, then deletes it."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.home import StationHome
from fieldstation.hub.models import UploadedFile
from fieldstation.retention import RetentionJob
from fieldstation.store import Database
from fieldstation.store.models import Recording, Upload
from fieldstation.upload.job import UploadJob

MB = 1024 * 1024


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MB):
            digest.update(block)
    return digest.hexdigest()


def file_state(db: Database, recording_id: int) -> str:
    with db.session() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None
        return recording.file_state


def upload_row(db: Database, recording_id: int) -> Upload:
    with db.session() as session:
        row = session.scalars(select(Upload).where(Upload.recording_id == recording_id)).one()
        session.expunge(row)
        return row


@pytest.mark.slow
def test_50_mb_through_five_cuts_arrives_identical_and_retention_waits(
    hub: Any,
    make_proxy: Any,
    make_station: Any,
    home: StationHome,
    db: Database,
    clock: VirtualClock,
    rows: Any,
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    cuts = [rng.randrange(64 * 1024, 8 * MB) for _ in range(5)]  # 5 cuts < 50 MB in all
    recording_id = rows.recording(50 * MB)
    source = home.root / upload_row_path(db, recording_id)
    clock.advance(3 * 86400)  # retention's keep = days, 1 would delete it now
    retention_seen: list[str] = []
    config_holder: list[Any] = []

    def on_cut(_index: int) -> None:  # mid-upload: retention must keep the file
        retention = RetentionJob(config_holder[0], db, home, clock)
        retention.run_once()
        retention_seen.append(file_state(db, recording_id))

    proxy = make_proxy(hub.port, cuts, on_cut=on_cut)
    config = make_station(url=f"http://127.0.0.1:{proxy.port}/uploads", select="all")
    config_holder.append(config)
    retention = RetentionJob(config, db, home, clock)
    # chosen but not queued yet: kept
    retention.run_once()
    assert file_state(db, recording_id) == "present"

    job = UploadJob(config, db, home, clock)
    try:
        # the hub unreachable: the row waits with backoff, retention keeps the file
        proxy.refusing = True
        assert job.run_once() == 0
        row = upload_row(db, recording_id)
        assert row.state == "pending" and row.attempts == 1 and row.last_error
        retention.run_once()
        assert file_state(db, recording_id) == "present"
        proxy.refusing = False
        for _turn in range(20):
            clock.advance(600)
            if job.run_once():
                break
    finally:
        job.close()
    assert proxy.done == 5, f"seed {seed}: cuts {cuts}"
    assert retention_seen == ["present"] * 5, f"seed {seed}"
    row = upload_row(db, recording_id)
    assert row.state == "sent" and row.offset == 50 * MB, f"seed {seed}: {row.last_error}"
    with hub.db.session() as session:
        stored = session.scalars(select(UploadedFile)).one()
        assert stored.state == "stored" and stored.location is not None
        location = stored.location
    arrived = hub.service.store.path(location)
    assert arrived.stat().st_size == 50 * MB
    assert sha256_of(arrived) == sha256_of(source), f"seed {seed}: cuts {cuts}"
    # confirmed: retention may delete it now
    retention.run_once()
    assert file_state(db, recording_id) == "deleted"
    assert not source.exists()
    assert not list(Path(hub.service.partial_root).rglob("*-*"))  # no partial file left


def upload_row_path(db: Database, recording_id: int) -> str:
    with db.session() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None
        return recording.path
