"""A live sensor's ``warmup``: opened before its slot, the recording starts at the slot start
to the frame (issue 22), on virtual time with the synthetic sensor (its frame 0 is captured
when it is opened, so a late open would show as a late first frame)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from fieldstation.clock import SystemClock
from fieldstation.recording.job import run_recorder
from fieldstation.sensors import Block
from fieldstation.sensors.generator import SyntheticSensor

from .test_recorder import SYNTH, Scripted, duty_cycle, rows_of

RATE = SYNTH["sample_rate"]


def _sessions(db: Any) -> list[list[Any]]:
    sessions: dict[str, list[Any]] = {}
    for row in rows_of(db):
        sessions.setdefault(row.session_id, []).append(row)
    return list(sessions.values())


def _stream(config: Any, start: int, frames: int) -> np.ndarray:
    return SyntheticSensor(config.sensor("syn"), SystemClock()).samples(start, start + frames)


def test_block_since_keeps_the_frames_captured_at_or_after_a_time() -> None:
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    block = Block(np.arange(10, dtype=np.int16).reshape(10, 1), 100, t0)
    assert block.since(t0, 1000) is block
    assert block.since(t0 - timedelta(seconds=1), 1000) is block
    assert block.since(t0 + timedelta(milliseconds=10), 1000) is None
    # 3.5 ms after frame 0 at 1 kHz: frames 0-3 were captured before, frame 4 is the first kept
    tail = block.since(t0 + timedelta(microseconds=3500), 1000)
    assert tail is not None
    assert (tail.start_frame, tail.captured_at, tail.data[:, 0].tolist()) == (
        104,
        t0 + timedelta(milliseconds=4),
        [4, 5, 6, 7, 8, 9],
    )
    # at 3 kHz a frame lasts 333.3 us: the time of the first frame kept is rounded to the us
    tail = block.since(t0 + timedelta(microseconds=1), 3000)
    assert tail is not None and tail.captured_at == t0 + timedelta(microseconds=333)


@pytest.mark.parametrize("warmup", [0.0, 2.0])
def test_a_sensor_opened_late_starts_late_and_a_warmed_up_one_at_the_slot_start(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, clock, warmup
):
    """A sensor whose first frame comes 0.3 s after it is opened (a device starting up):
    without warmup each session starts 0.3 s late; with 2 s it starts at the slot start, the
    frames before it dropped, and the sensor is opened 2 s before each slot (slots 60 s
    apart: closed between them)."""
    config = make_station({**SYNTH, "chunk": "4s", "block": "0.13s", "warmup": warmup})
    ctx, progress = make_ctx(config)
    inner = SyntheticSensor(config.sensor("syn"), clock)  # type: ignore[arg-type]
    startup = 0.3

    class SlowStart(Scripted):
        """Delivers the frames captured from 0.3 s after the open on (a device starting)."""

        def open(self) -> None:
            super().open()
            self.opened_at.append(clock.now())

        def read(self) -> Block | None:
            first_frame = self.opened_at[-1] + timedelta(seconds=startup)
            while (block := self.inner.read()) is not None:
                if (kept := block.since(first_frame, RATE)) is not None:
                    return kept
            return None

    sensor = SlowStart(inner, {})
    sensor.opened_at: list[datetime] = []
    first = clock.now() + timedelta(seconds=30)
    progress.stop_after_chunks = 6  # 3 slots x (4 s + 2 s)
    run_recorder(ctx, "syn", sensor=sensor, slots=duty_cycle(first, record=6.0, every=60.0))
    sessions = _sessions(db)
    assert len(sessions) == 3
    starts = [first + timedelta(seconds=60 * k) for k in range(3)]
    assert sensor.opened_at == [s - timedelta(seconds=warmup) for s in starts]
    late = timedelta(seconds=0 if warmup else startup)
    assert [chunks[0].started_at for chunks in sessions] == [s + late for s in starts]
    for chunks in sessions:
        # the slot is recorded whole from its first frame: 6 s (or 5.7 s after a late start)
        assert sum(c.frames for c in chunks) == round((6.0 - late.total_seconds()) * RATE)
    # the frames kept are the stream's frames from the slot start on (frame 0 = the open)
    skipped = round((warmup or startup) * RATE)
    assert np.array_equal(
        _read(sessions[0][0], ctx), _stream(config, skipped, sessions[0][0].frames)
    )
    # "slot" is reported when the sensor opens for each slot, "waiting" names the slot start
    assert len(progress.of("slot")) == 3
    assert progress.of("waiting")[0] == {"next_slot": first.isoformat()}


def _read(row: Any, ctx: Any) -> np.ndarray:
    import soundfile as sf

    return sf.read(str(ctx.home.root / row.path), dtype="int16", always_2d=True)[0]


@pytest.mark.parametrize("gap", [0.5, 0.05])
def test_slots_closer_than_the_warmup_keep_the_sensor_open(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, clock, gap
):
    """1 s slots with gaps of 0.5 s or 0.05 s (less than a 0.13 s block: the next slot starts
    inside the block that ended the last) and a 2 s warmup: one open for every slot, each
    session starts at its slot start to the frame with the stream's frames from there."""
    config = make_station({**SYNTH, "chunk": "4s", "block": "0.13s", "warmup": 2.0})
    ctx, progress = make_ctx(config)
    sensor = Scripted(SyntheticSensor(config.sensor("syn"), clock), {})  # type: ignore[arg-type]
    first = clock.now() + timedelta(seconds=30)
    progress.stop_after_chunks = 4
    run_recorder(ctx, "syn", sensor=sensor, slots=duty_cycle(first, record=1.0, every=1 + gap))
    sessions = _sessions(db)
    assert sensor.opens == 1
    assert len(sessions) == 4
    # each slot is reported as it begins (the liveness rule then expects its chunk), with no
    # "waiting" between: the sensor stays open and the recorder goes on
    assert len(progress.of("slot")) >= 4
    assert len(progress.of("waiting")) == 1  # before the first slot's warmup
    opened = first - timedelta(seconds=2)
    for k, chunks in enumerate(sessions):
        start = first + timedelta(seconds=k * (1 + gap))
        assert [(c.started_at, c.frames, c.end_reason) for c in chunks] == [
            (start, RATE, "window_end")
        ]
        frame = round((start - opened).total_seconds() * RATE)
        assert np.array_equal(_read(chunks[0], ctx), _stream(config, frame, RATE))


def test_a_stop_while_the_sensor_warms_up_closes_it_and_records_nothing(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, clock
):
    config = make_station({**SYNTH, "chunk": "1s", "warmup": 2.0})
    ctx, progress = make_ctx(config)
    inner = SyntheticSensor(config.sensor("syn"), clock)  # type: ignore[arg-type]
    first = clock.now() + timedelta(seconds=10)

    def stop(_: Any) -> None:  # the 5th block is read 0.5 s into the warmup
        ctx.stop_reason = "stopped"
        ctx.stop.set()

    sensor = Scripted(inner, {5: stop})
    run_recorder(ctx, "syn", sensor=sensor, slots=duty_cycle(first, record=5.0, every=60.0))
    assert sensor.opens == 1 and not inner._open
    assert rows_of(db) == [] and len(progress.of("slot")) == 1  # reported at the open


def test_the_liveness_limit_allows_for_the_warmup(make_station) -> None:  # type: ignore[no-untyped-def]
    """The recorder reports its slot when the sensor opens, ``warmup`` s before the slot: the
    supervisor's limit for the first chunk is that much longer."""
    from fieldstation.runtime.liveness import RecorderLiveness
    from fieldstation.runtime.station import process_jobs

    config = make_station({**SYNTH, "chunk": "4s", "warmup": 20.0})
    (spec,) = [s for s in process_jobs(config) if s.name == "recorder:syn"]
    assert isinstance(spec.liveness, RecorderLiveness)
    grace = config.runtime.liveness_grace
    assert spec.liveness.limit == 2 * 4 + grace + 20
    reported = spec.liveness.limit - 1
    assert spec.liveness.stalled("slot", 0.0, reported) is None
    assert spec.liveness.stalled("slot", 0.0, spec.liveness.limit + 1) is not None
