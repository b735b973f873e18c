"""Start-up recovery reads ``spool/`` and the rows not yet confirmed, not the whole archive
(issue 22, decision 0120); the full walk of ``data/`` is for a new or rebuilt database."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from fieldstation.clock import SystemClock
from fieldstation.recording.chunk import ChunkWriter
from fieldstation.recording.commit import commit_chunk
from fieldstation.recording.metadata import ChunkSpec
from fieldstation.recording.recovery import recover
from fieldstation.runtime.startup import start_station
from fieldstation.sensors.base import audio_description
from fieldstation.store.models import Recording


def _spec(ctx: Any, index: int) -> ChunkSpec:
    return ChunkSpec(
        station=ctx.config.station.id,
        sensor="syn",
        session_id="0f0f0f0f-0000-4000-8000-000000000000",
        chunk_index=index,
        start_frame=index * 800,
        started_at=datetime(2026, 6, 1, 0, 0, index, tzinfo=UTC),
        stream=audio_description(8000, 1, "int16", "wav"),
        deployment_id=ctx.deployment_id,
        config_hash="h",
        version="test",
        latitude=1.0,
        longitude=2.0,
        elevation=3.0,
    )


def _commit(ctx: Any, index: int) -> Recording:
    import numpy as np

    writer = ChunkWriter(ctx.home.spool, _spec(ctx, index))
    writer.write(np.full((800, 1), index, dtype=np.int16))
    return commit_chunk(ctx.db, ctx.config, ctx.home, writer.finish("complete"), ctx.clock.now())


def _states(db: Any) -> dict[int, str]:
    with db.session() as session:
        return {r.chunk_index: r.file_state for r in session.scalars(select(Recording))}


@pytest.fixture
def archive(make_station, make_ctx, db):  # type: ignore[no-untyped-def]
    """Chunk 0 processed, its file gone; chunk 1 unprocessed, its file gone; chunk 2 a file
    under data/ without a row (put there by hand): what only a full walk can see, beside what
    a quick recovery must still see (chunk 1: a processor would read it next)."""
    import numpy as np

    sensor = {"name": "syn", "kind": "synthetic", "sample_rate": 8000, "frequency": 1000}
    ctx, _ = make_ctx(make_station(sensor))
    done, waiting = (_commit(ctx, i) for i in range(2))
    with db.session() as session:
        session.execute(update(Recording).where(Recording.id == done.id).values(state="processed"))
    (ctx.home.root / done.path).unlink()
    (ctx.home.root / waiting.path).unlink()
    spec = _spec(ctx, 2)
    writer = ChunkWriter(ctx.home.spool, spec, sidecar=False)
    writer.write(np.zeros((800, 1), dtype=np.int16))
    finished = writer.finish("complete")
    stray = ctx.home.root / spec.relpath()
    os.replace(finished.audio, stray)
    return ctx, done, waiting, spec.relpath()


def test_quick_recovery_checks_only_unconfirmed_rows_and_the_spool(archive, db) -> None:  # type: ignore[no-untyped-def]
    ctx, done, waiting, stray = archive
    report = recover(ctx, full=False)
    assert report.missing == [waiting.id]
    assert report.registered == []
    assert _states(db) == {0: "present", 1: "missing"}  # chunk 0's loss is left to a full walk


def test_full_recovery_walks_every_file_and_row(archive, db) -> None:  # type: ignore[no-untyped-def]
    ctx, done, waiting, stray = archive
    report = recover(ctx, full=True)
    assert sorted(report.missing) == sorted([done.id, waiting.id])
    assert report.registered == [stray]
    assert _states(db) == {0: "missing", 1: "missing", 2: "present"}


def test_start_up_of_a_known_database_is_quick_and_of_a_new_one_full(archive, db) -> None:  # type: ignore[no-untyped-def]
    ctx, done, waiting, stray = archive
    config = ctx.config
    started = start_station(config, SystemClock())
    try:
        assert started.recovery.registered == []
        assert started.recovery.missing == [waiting.id]
    finally:
        started.close()
    db.dispose()
    for file in Path(config.home_path()).glob("station.db*"):
        os.unlink(file)  # a rebuilt database: everything under data/ is walked
    started = start_station(config, SystemClock())
    try:
        assert started.recovery.registered == [stray]
    finally:
        started.close()
