"""Sample exactness for any chunk length, block size, slot length and sample format."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from fieldstation.clock import SystemClock
from fieldstation.recording.job import ContinuousSlot, run_recorder
from fieldstation.sensors.generator import SyntheticSensor
from fieldstation.store.models import Recording


def recorded(db: Any, sensor: str) -> list[Recording]:
    with db.session() as session:
        query = select(Recording).where(Recording.sensor == sensor).order_by(Recording.id)
        return list(session.scalars(query))


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    chunk_ms=st.integers(50, 700),
    block_ms=st.integers(5, 300),
    slot_ms=st.integers(1, 2000),
    rate=st.sampled_from([8000, 11025, 22050, 44100]),
)
def test_chunks_partition_the_slot_exactly(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, read_chunks, chunk_ms, block_ms, slot_ms, rate
):
    name = f"p{chunk_ms}_{block_ms}_{slot_ms}_{rate}"
    sensor = {
        "name": name,
        "kind": "synthetic",
        "sample_rate": rate,
        "frequency": 1000,
        "chunk": chunk_ms / 1000,
        "block": block_ms / 1000,
        "format": "wav",
    }
    config = make_station(sensor)
    ctx, progress = make_ctx(config)
    start = ctx.clock.now()
    end = start + timedelta(milliseconds=slot_ms)

    def slots(now: Any) -> ContinuousSlot | None:
        return ContinuousSlot(start, end) if now < end else None

    def progress_(what: str, details: dict[str, Any]) -> None:
        if what == "waiting":
            ctx.stop.set()

    ctx.progress = progress_
    run_recorder(ctx, name, slots=slots)
    rows = recorded(db, name)
    total = slot_ms * rate // 1000
    n = round(chunk_ms / 1000 * rate)
    assert sum(r.frames for r in rows) == total
    assert [r.start_frame for r in rows] == list(range(0, total, n))
    assert all(r.frames == n for r in rows[:-1])
    assert all(r.end_reason == "complete" for r in rows[:-1])
    if rows:
        assert rows[-1].end_reason == ("complete" if total % n == 0 else "window_end")
    for r in rows:
        micros = (r.start_frame * 2_000_000 + rate) // (2 * rate)  # half up, integers only
        assert r.started_at == start + timedelta(microseconds=micros)
    expected = SyntheticSensor(config.sensor(name), SystemClock()).samples(0, total)
    assert np.array_equal(read_chunks([r.path for r in rows]), expected)


@pytest.mark.parametrize(
    ("sample_format", "fmt", "dtype"),
    [
        ("int16", "flac", "int16"),
        ("int24", "flac", "int32"),
        ("int24", "wav", "int32"),
        ("int32", "wav", "int32"),
        ("float32", "wav", "float32"),
    ],
)
def test_every_sample_format_round_trips(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, read_chunks, sample_format, fmt, dtype
):
    sensor = {
        "name": "fmt",
        "kind": "synthetic",
        "sample_rate": 16000,
        "channels": 2,
        "frequency": 2000,
        "chunk": "0.5s",
        "sample_format": sample_format,
        "format": fmt,
    }
    config = make_station(sensor)
    ctx, progress = make_ctx(config)
    progress.stop_after_chunks = 3
    run_recorder(ctx, "fmt")
    rows = recorded(db, "fmt")
    got = read_chunks([r.path for r in rows], dtype=dtype)
    expected = SyntheticSensor(config.sensor("fmt"), SystemClock()).samples(0, 24000)
    assert got.shape == (24000, 2)
    assert np.array_equal(got, expected)
