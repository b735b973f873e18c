"""Real bat and bird recordings replayed through the recorder: chunks are sample-exact."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import select

from fieldstation.recording.job import run_recorder
from fieldstation.recording.metadata import read_embedded
from fieldstation.store.models import Message, Recording

pytestmark = pytest.mark.samples


def _record(
    make_ctx: Any, make_station: Any, files: list[Path], fmt: str, chunk: str, name: str = "rep"
) -> Any:
    sensor = {
        "name": name,
        "kind": "replay",
        "files": [str(p) for p in files],
        "speed": 1.0,
        "format": fmt,
        "chunk": chunk,
        "block": "0.37s",
    }
    config = make_station(sensor)
    ctx, progress = make_ctx(config)
    run_recorder(ctx, name, stop_when_exhausted=True)
    return ctx, progress


def _check_stream(
    db, home, read_chunks, source: np.ndarray, rate: int, name: str = "rep"
) -> list[Recording]:  # type: ignore[no-untyped-def]
    with db.session() as session:
        rows = list(
            session.scalars(
                select(Recording).where(Recording.sensor == name).order_by(Recording.id)
            )
        )
        ids = [r.id for r in rows]
        query = select(Message).where(Message.kind == "recording", Message.recording_id.in_(ids))
        messages = list(session.scalars(query))
    assert rows, "no chunk recorded"
    got = read_chunks([r.path for r in rows])
    assert got.shape == source.shape
    assert np.array_equal(got, source)
    assert len({r.session_id for r in rows}) == 1
    for a, b in zip(rows, rows[1:], strict=False):
        assert b.start_frame == a.start_frame + a.frames
        assert b.chunk_index == a.chunk_index + 1
        step = (b.started_at - a.started_at) / timedelta(microseconds=1)
        assert abs(step - a.frames * 1_000_000 / rate) <= 1  # microsecond rounding
        assert a.end_reason == "complete"
    assert rows[-1].end_reason == "complete"
    assert all(r.rate == rate and r.media == "audio" for r in rows)
    assert sorted(m.recording_id for m in messages) == [r.id for r in rows]
    for r in rows:
        path = home.root / r.path
        assert path.exists() and r.bytes == path.stat().st_size
        assert sf.info(str(path)).frames == r.frames
    return rows


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_bird_file_replayed_into_exact_chunks(  # type: ignore[no-untyped-def]
    bird_files, make_ctx, make_station, home, db, read_chunks, spool_empty, fmt
):
    source, rate = sf.read(str(bird_files[0]), dtype="int16", always_2d=True)
    ctx, progress = _record(make_ctx, make_station, bird_files[:1], fmt, "1s")
    rows = _check_stream(db, home, read_chunks, source, rate)
    assert len(rows) == -(-len(source) // rate)
    assert len(progress.of("chunk")) == len(rows)
    assert spool_empty()
    spec, reason = read_embedded(home.root / rows[1].path)
    assert (spec.sensor, spec.chunk_index, spec.start_frame) == ("rep", 1, rows[1].start_frame)
    assert spec.started_at == rows[1].started_at
    assert reason == ("complete" if fmt == "wav" else None)


def test_bat_files_replayed_into_exact_chunks(  # type: ignore[no-untyped-def]
    bat_files, make_ctx, make_station, home, db, read_chunks
):
    # Files of one sample rate form one stream; each rate gets its own replay run.
    by_rate: dict[int, list[Path]] = {}
    for path in bat_files:
        by_rate.setdefault(sf.info(str(path)).samplerate, []).append(path)
    assert len(by_rate) >= 3
    for rate, files in sorted(by_rate.items()):
        source = np.concatenate([sf.read(str(p), dtype="int16", always_2d=True)[0] for p in files])
        _record(make_ctx, make_station, files, "flac", "0.5s", name=f"bat{rate}")
        _check_stream(db, home, read_chunks, source, rate, name=f"bat{rate}")
