"""The recorder loop: slots, sample-exact chunks, end reasons, stop, disk guard, device errors."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from fieldstation.clock import SystemClock
from fieldstation.recording.job import ContinuousSlot, RecorderError, run_recorder
from fieldstation.sensors import Block, DeviceError, SensorHealth
from fieldstation.sensors.generator import SyntheticSensor
from fieldstation.store.models import Event, Message, Recording

SYNTH = {"name": "syn", "kind": "synthetic", "sample_rate": 8000, "frequency": 1000}


def rows_of(db: Any, sensor: str = "syn") -> list[Recording]:
    with db.session() as session:
        query = select(Recording).where(Recording.sensor == sensor).order_by(Recording.id)
        return list(session.scalars(query))


def events_of(db: Any, kind: str) -> list[Event]:
    with db.session() as session:
        return list(session.scalars(select(Event).where(Event.kind == kind)))


def duty_cycle(first: datetime, record: float, every: float) -> Any:
    """Slots of ``record`` seconds every ``every`` seconds from ``first``."""

    def slots(now: datetime) -> ContinuousSlot:
        k = max(0, int((now - first).total_seconds() // every))
        while True:
            start = first + timedelta(seconds=k * every)
            end = start + timedelta(seconds=record)
            if end > now:
                return ContinuousSlot(start, end)
            k += 1

    return slots


class Scripted:
    """A sensor wrapper that runs ``actions[i]`` before handing out block i."""

    def __init__(self, inner: Any, actions: dict[int, Any]) -> None:
        self.inner = inner
        self.actions = actions
        self.sample_rate, self.channels, self.dtype = inner.sample_rate, inner.channels, inner.dtype
        self.describe = inner.describe
        self.reads = 0
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        self.inner.open()

    def read(self) -> Block | None:
        action = self.actions.get(self.reads)
        self.reads += 1
        if action is not None:
            result = action(self.inner)
            if isinstance(result, Block):
                return result
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()

    def health(self) -> SensorHealth:
        return self.inner.health()


def test_synthetic_chunks_concatenate_to_the_generated_stream(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, read_chunks, spool_empty
):
    config = make_station({**SYNTH, "chunk": "0.75s", "block": "0.13s"})
    ctx, progress = make_ctx(config)
    progress.stop_after_chunks = 9
    run_recorder(ctx, "syn", slots=lambda now: ContinuousSlot(now, now + timedelta(days=1)))
    rows = rows_of(db)
    # the 9th chunk fills up inside block 52 (52 x 1040 = 54080 frames): the rest of that
    # block, captured before the stop, is kept as a partial chunk ending 'stopped'
    assert [(r.frames, r.end_reason) for r in rows] == [(6000, "complete")] * 9 + [(80, "stopped")]
    expected = SyntheticSensor(config.sensor("syn"), SystemClock()).samples(0, 54080)  # type: ignore[arg-type]
    assert np.array_equal(read_chunks([r.path for r in rows]), expected)
    starts = [r.started_at for r in rows]
    assert all(b - a == timedelta(seconds=0.75) for a, b in zip(starts, starts[1:], strict=False))
    assert starts[0] == datetime(2026, 6, 1, tzinfo=UTC)
    assert spool_empty()
    chunks = progress.of("chunk")
    assert [c["recording_id"] for c in chunks] == [r.id for r in rows]
    assert [c["frames"] for c in chunks] == [r.frames for r in rows]
    assert [c["path"] for c in chunks] == [r.path for r in rows]
    assert progress.of("slot")[0]["start"] == "2026-06-01T00:00:00+00:00"


@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_duty_cycle_slots_cut_sessions_at_window_end(make_station, make_ctx, db, clock, speed):  # type: ignore[no-untyped-def]
    # at speed 4 a slot's frames are all in after a quarter of it: it is not recorded twice
    config = make_station({**SYNTH, "chunk": "4s", "speed": speed})
    ctx, progress = make_ctx(config)
    first = clock.now() + timedelta(seconds=30)
    progress.stop_after_chunks = 6  # 3 slots x (4 s + 2 s)
    run_recorder(ctx, "syn", slots=duty_cycle(first, record=6.0, every=60.0))
    rows = rows_of(db)
    sessions: dict[str, list[Recording]] = {}
    for r in rows:
        sessions.setdefault(r.session_id, []).append(r)
    assert len(sessions) == 3
    for k, chunks in enumerate(sessions.values()):
        assert [c.frames for c in chunks] == [32000, 16000]
        assert [c.end_reason for c in chunks] == ["complete", "window_end"]
        assert chunks[0].started_at == first + timedelta(seconds=60 * k)
    waiting = progress.of("waiting")
    assert waiting[0] == {"next_slot": first.isoformat()}
    assert len(progress.of("slot")) == 3


def test_until_caps_the_waits_between_slots_and_ends_the_job(make_station, make_ctx, db, clock):  # type: ignore[no-untyped-def]
    # one 2 s slot, then nothing before the end time: the job must not idle for an hour
    config = make_station({**SYNTH, "chunk": "1s"})
    ctx, progress = make_ctx(config)
    start = clock.now() + timedelta(seconds=5)
    until = start + timedelta(seconds=10)

    def slots(now: datetime) -> ContinuousSlot | None:
        return (
            ContinuousSlot(start, start + timedelta(seconds=2))
            if now < start + timedelta(seconds=2)
            else None
        )

    run_recorder(ctx, "syn", slots=slots, until=until)
    assert clock.now() == until  # woke at the end time, not after IDLE_POLL
    assert [(r.frames, r.end_reason) for r in rows_of(db)] == [(8000, "complete")] * 2
    assert progress.of("waiting")[-1] == {"next_slot": None}


def test_adjacent_slots_continue_one_session(make_station, make_ctx, db, clock):  # type: ignore[no-untyped-def]
    config = make_station({**SYNTH, "chunk": "4s"})
    ctx, progress = make_ctx(config)
    progress.stop_after_chunks = 5
    run_recorder(ctx, "syn", slots=duty_cycle(clock.now(), record=3.0, every=3.0))
    rows = rows_of(db)
    assert len({r.session_id for r in rows}) == 1
    assert all(r.frames == 32000 and r.end_reason == "complete" for r in rows)


@pytest.mark.parametrize("keep_partial", [True, False])
def test_stop_during_a_chunk_closes_it_with_the_stop_reason(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, spool_empty, keep_partial
):
    config = make_station({**SYNTH, "chunk": "1s", "block": "0.1s", "keep_partial": keep_partial})
    ctx, progress = make_ctx(config)

    def stop(_inner: Any) -> None:
        ctx.stop_reason = "shutdown"
        ctx.stop.set()

    sensor = Scripted(SyntheticSensor(config.sensor("syn"), ctx.clock), {25: stop})  # type: ignore[arg-type]
    run_recorder(ctx, "syn", sensor=sensor)
    rows = rows_of(db)
    # stop is set while block 25 is read: blocks 0..25 (26 x 800 frames) are written,
    # 2 full chunks + a partial one of 4800 frames; block 26 is never read
    if keep_partial:
        assert [(r.frames, r.end_reason) for r in rows] == [
            (8000, "complete"),
            (8000, "complete"),
            (4800, "shutdown"),
        ]
    else:
        assert [(r.frames, r.end_reason) for r in rows] == [(8000, "complete")] * 2
    assert spool_empty()


def test_stop_while_waiting_returns_at_once(make_station, make_ctx):  # type: ignore[no-untyped-def]
    config = make_station(SYNTH)
    ctx, progress = make_ctx(config, SystemClock())
    far = datetime.now(UTC) + timedelta(hours=5)
    thread = threading.Thread(
        target=run_recorder,
        args=(ctx, "syn"),
        kwargs={"slots": lambda now: ContinuousSlot(far, far + timedelta(hours=1))},
    )
    thread.start()
    deadline = time.monotonic() + 5
    while not progress.of("waiting") and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    ctx.stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 0.5
    assert progress.of("waiting") == [{"next_slot": far.isoformat()}]


def test_no_chunk_starts_while_disk_is_low_then_recording_resumes(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, clock
):
    config = make_station({**SYNTH, "chunk": "1s", "min_free": "1000"})
    ctx, progress = make_ctx(config)
    free = {"bytes": 10}
    calls = []

    def disk_usage(path: Any) -> Any:
        calls.append(clock.now())
        if len(calls) == 5:
            free["bytes"] = 10**9  # space comes back after 4 checks (40 s of retries)
        return SimpleNamespace(free=free["bytes"])

    progress.stop_after_chunks = 2
    start = clock.now()
    run_recorder(ctx, "syn", disk_usage=disk_usage)
    events = events_of(db, "disk_low")
    assert len(events) == 1 and events[0].data["free"] == 10
    # while paused the supervisor hears "waiting" (no chunk is due), with the next try
    waits = [w["next_slot"] for w in progress.of("waiting")]
    assert waits == [(start + timedelta(seconds=k)).isoformat() for k in range(1, 5)]
    # one reason for the whole pause: the station log warns once, not at every check
    reasons = {w.get("reason") for w in progress.of("waiting")}
    assert reasons == {"disk low: free space below min_free 1000 bytes"}
    rows = rows_of(db)
    assert len(rows) == 2
    assert rows[0].started_at == start + timedelta(seconds=4)
    with db.session() as session:
        messages = session.scalars(select(Message).where(Message.kind == "event")).all()
    assert any('"disk_low"' in m.payload for m in messages)


def test_disk_falling_below_the_floor_closes_the_chunk(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db
):
    config = make_station({**SYNTH, "chunk": "1s", "block": "0.1s", "min_free": "1000"})
    ctx, progress = make_ctx(config)
    calls = []

    def disk_usage(path: Any) -> Any:
        calls.append(1)
        if len(calls) > 20:  # the 21st check is inside the third chunk
            ctx.stop_reason = "stopped"
            ctx.stop.set()
            return SimpleNamespace(free=100)
        return SimpleNamespace(free=10**9)

    run_recorder(ctx, "syn", disk_usage=disk_usage)
    rows = rows_of(db)
    assert rows[-1].end_reason == "disk_low"
    assert 0 < rows[-1].frames < 8000
    assert events_of(db, "disk_low")


def test_device_error_ends_the_chunk_and_the_sensor_is_reopened(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db
):
    config = make_station({**SYNTH, "chunk": "1s", "block": "0.1s"})
    ctx, progress = make_ctx(config)

    def fail(_inner: Any) -> None:
        raise DeviceError("unplugged")

    sensor = Scripted(SyntheticSensor(config.sensor("syn"), ctx.clock), {13: fail})  # type: ignore[arg-type]
    progress.stop_after_chunks = 3
    run_recorder(ctx, "syn", sensor=sensor)
    rows = rows_of(db)
    assert [(r.frames, r.end_reason) for r in rows] == [
        (8000, "complete"),
        (2400, "device_error"),  # blocks 0..12: 10400 frames
        (8000, "complete"),
    ]
    assert rows[1].session_id == rows[0].session_id != rows[2].session_id
    assert sensor.opens == 2
    assert len(events_of(db, "device_error")) == 1
    kinds = [what for what, _ in progress.reports]
    assert kinds == ["slot", "chunk", "chunk", "waiting", "slot", "chunk"]


def test_lost_frames_end_the_session_instead_of_hiding_a_gap(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db
):
    config = make_station({**SYNTH, "chunk": "1s", "block": "0.1s"})
    ctx, progress = make_ctx(config)

    def skip(inner: Any) -> Block:
        inner.read()  # this block is "lost"
        return inner.read()

    sensor = Scripted(SyntheticSensor(config.sensor("syn"), ctx.clock), {5: skip})  # type: ignore[arg-type]
    progress.stop_after_chunks = 2
    run_recorder(ctx, "syn", sensor=sensor)
    rows = rows_of(db)
    assert [(r.frames, r.end_reason, r.chunk_index) for r in rows] == [
        (4000, "device_error", 0),
        (8000, "complete", 0),
    ]
    assert rows[0].extra == {"lost_frames_after": 800}
    assert rows[1].started_at - rows[0].started_at == timedelta(seconds=0.6)
    assert events_of(db, "frames_lost")


def test_unknown_sensor_is_a_clear_error(make_station, make_ctx):  # type: ignore[no-untyped-def]
    ctx, _ = make_ctx(make_station(SYNTH))
    with pytest.raises(RecorderError, match="no sensor named 'nope'.*syn"):
        run_recorder(ctx, "nope")


def test_real_schedule_duty_cycle_drives_the_sessions(make_station, make_ctx, db, clock):  # type: ignore[no-untyped-def]
    schedules = {
        "duty": {
            "windows": [{"start": "00:00", "end": "24:00"}],
            "duty_cycle": {"record": "5s", "every": "20s", "align": "clock"},
        }
    }
    config = make_station({**SYNTH, "chunk": "2s", "schedule": "duty"}, schedules=schedules)
    ctx, progress = make_ctx(config)
    progress.stop_after_chunks = 9
    run_recorder(ctx, "syn")  # slots from fieldstation.schedule.next_slot
    rows = rows_of(db)
    assert [(r.chunk_index, r.frames, r.end_reason) for r in rows] == [
        (0, 16000, "complete"),
        (1, 16000, "complete"),
        (2, 8000, "window_end"),
    ] * 3
    starts = [r.started_at for r in rows if r.chunk_index == 0]
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    assert starts == [t0, t0 + timedelta(seconds=20), t0 + timedelta(seconds=40)]


def test_input_overflows_during_a_chunk_are_kept_in_its_row(make_station, make_ctx, db):  # type: ignore[no-untyped-def]
    config = make_station({**SYNTH, "chunk": "1s", "block": "0.1s"})
    ctx, progress = make_ctx(config)

    class Overflowing(Scripted):
        def health(self) -> SensorHealth:  # the device flags one overflow in block 14
            return SensorHealth(state="open", overflows=1 if self.reads > 14 else 0)

    sensor = Overflowing(SyntheticSensor(config.sensor("syn"), ctx.clock), {})  # type: ignore[arg-type]
    progress.stop_after_chunks = 3
    run_recorder(ctx, "syn", sensor=sensor)
    assert [r.extra for r in rows_of(db)] == [{}, {"input_overflows": 1}, {}]


def test_frames_a_camera_duplicated_or_dropped_during_a_chunk_are_kept_in_its_row(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db
):
    config = make_station({**SYNTH, "chunk": "1s", "block": "0.1s"})
    ctx, progress = make_ctx(config)

    class Converting(Scripted):
        def health(self) -> SensorHealth:  # FFmpeg's running dup/drop totals, as a camera's
            return SensorHealth(
                state="open",
                details={"dup": 2 * max(0, self.reads - 12), "drop": 5 if self.reads > 25 else 0},
            )

    sensor = Converting(SyntheticSensor(config.sensor("syn"), ctx.clock), {})  # type: ignore[arg-type]
    progress.stop_after_chunks = 3
    run_recorder(ctx, "syn", sensor=sensor)
    assert [r.extra for r in rows_of(db)] == [
        {},
        {"frames_duplicated": 16},
        {"frames_duplicated": 18, "frames_dropped": 5},
    ]


def test_an_input_overflow_ends_the_chunk_and_re_anchors_the_session(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, clock
):
    from fieldstation.sensors.device import AudioSensor

    # blocksize 0: the flagged buffer is kept (with a fixed size it is dropped: test_audio.py)
    audio = {"name": "mic", "kind": "audio", "sample_rate": 8000, "chunk": "0.5s", "blocksize": 0}
    config = make_station({**audio, "timeout": "0.01s", "queue_blocks": 16})
    ctx, _ = make_ctx(config)
    sensor = AudioSensor(config.sensor("mic"), clock)  # type: ignore[arg-type]
    t0 = clock.now()
    # six 0.25 s buffers; PortAudio discarded 0.2 s of input before the fourth (and says so
    # only with the input_overflow flag: the frame index does not jump)
    adc = [0.0, 0.25, 0.5, 0.95, 1.2, 1.45]

    opens: list[int] = []

    def fake_open() -> None:
        sensor._stream = SimpleNamespace(active=True, abort=lambda: None, close=lambda: None)
        opens.append(1)
        if len(opens) > 1:  # reopened after the queue ran dry (device_error): done
            ctx.stop.set()
            return
        for i, at in enumerate(adc):  # the callback runs 10 ms after each buffer's ADC time
            clock.advance((t0 + timedelta(seconds=at + 0.26) - clock.now()).total_seconds())
            times = SimpleNamespace(currentTime=at + 0.26, inputBufferAdcTime=at)
            status = SimpleNamespace(input_overflow=i == 3)
            sensor._callback(np.full((2000, 1), i, dtype=np.int16), 2000, times, status)

    sensor.open = fake_open  # type: ignore[method-assign]
    run_recorder(
        ctx, "mic", sensor=sensor, slots=lambda now: ContinuousSlot(t0, t0 + timedelta(hours=1))
    )
    rows = rows_of(db, "mic")
    assert [(r.frames, r.end_reason) for r in rows] == [
        (4000, "complete"),
        (2000, "device_error"),  # ended by the overflow
        (4000, "complete"),
        (2000, "device_error"),  # the queue ran dry
    ]
    assert rows[1].extra["input_overflow"] is True
    assert len({rows[0].session_id, rows[1].session_id}) == 1
    assert rows[2].session_id != rows[1].session_id and rows[2].chunk_index == 0
    # the chunk after the overflow starts at the capture time of its first buffer, not at
    # the previous anchor + frames (which would be 0.2 s early)
    assert rows[2].started_at == t0 + timedelta(seconds=0.95)
    assert rows[3].started_at == t0 + timedelta(seconds=1.45)
    (event,) = events_of(db, "frames_lost")
    assert event.data["input_overflow"] is True and event.data["gap_seconds"] == 0.2


def test_a_device_that_stays_absent_gives_an_event_an_hour_and_says_why(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db
):
    """An unplugged microphone is reopened every minute for as long as it is gone: every try
    is logged and reported with its reason, but events (never dropped by the outbox cap) come
    once an hour, not 1,440 a day."""
    config = make_station({**SYNTH, "chunk": "1s", "block": "0.1s"})
    ctx, progress = make_ctx(config)
    started = ctx.clock.now()

    class Absent(Scripted):
        def open(self) -> None:
            self.opens += 1
            raise DeviceError("no audio input device 'usb' (inputs: none)")

    sensor = Absent(SyntheticSensor(config.sensor("syn"), ctx.clock), {})  # type: ignore[arg-type]
    report = progress.__call__

    def stop_after_150_minutes(what: str, details: dict[str, Any]) -> None:
        report(what, details)
        if ctx.clock.now() - started >= timedelta(minutes=150):
            ctx.stop.set()

    ctx.progress = stop_after_150_minutes  # type: ignore[method-assign]
    run_recorder(ctx, "syn", sensor=sensor)
    assert sensor.opens > 140  # every minute, after the first back-off steps
    assert len(events_of(db, "device_error")) == 3  # at 0 h, 1 h and 2 h
    reasons = {d.get("reason") for d in progress.of("waiting")}
    assert reasons == {"device error: no audio input device 'usb' (inputs: none)"}
    assert rows_of(db) == []
    # "slot" (logged by the station as "slot open") only once the sensor is open: none here
    assert progress.of("slot") == []


@pytest.mark.parametrize("kind", ["configuration", "sensor"])
def test_a_sensor_error_on_a_nearly_full_disk_is_raised_not_a_pause(  # type: ignore[no-untyped-def]
    make_station, make_ctx, kind
):
    """A replay's configuration error (or any sensor error) while the disk is nearly full is
    raised (the job exits 78 for a configuration error), not taken for a full disk and turned
    into an endless ``disk_low`` pause."""
    from fieldstation.job import ConfigurationError
    from fieldstation.sensors import SensorError
    from fieldstation.sensors.base import config_error

    config = make_station({**SYNTH, "chunk": "1s", "block": "0.1s", "min_free": "0"})
    ctx, progress = make_ctx(config)
    error = config_error("replay file x.flac is missing") if kind == "configuration" else None

    def fail(_inner: Any) -> None:
        raise error if error is not None else SensorError("cannot decode")

    sensor = Scripted(SyntheticSensor(config.sensor("syn"), ctx.clock), {3: fail})  # type: ignore[arg-type]
    report = progress.__call__

    def watch(what: str, details: dict[str, Any]) -> None:
        report(what, details)
        if len(progress.of("waiting")) >= 5:  # the old code paused here for ever
            ctx.stop.set()

    ctx.progress = watch  # type: ignore[method-assign]
    expected = ConfigurationError if kind == "configuration" else SensorError
    with pytest.raises(expected):
        run_recorder(ctx, "syn", sensor=sensor, disk_usage=lambda _path: SimpleNamespace(free=1000))
    assert not progress.of("waiting")


def test_a_vanished_home_stops_the_recorder_with_its_own_error(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db
):
    """``statvfs`` failing (the card removed) mid-chunk is not a full disk: the recorder
    raises a ``HomeError`` saying the home is gone instead of pausing for space that will
    never come; the chunk in progress stays in ``spool/`` for recovery."""
    from fieldstation.home import HomeError

    config = make_station({**SYNTH, "chunk": "1s", "block": "0.1s", "min_free": "1000"})
    ctx, progress = make_ctx(config)
    calls = []

    def disk_usage(path: Any) -> Any:
        calls.append(1)
        if len(calls) > 14:  # inside the second chunk
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return SimpleNamespace(free=10**9)

    report = progress.__call__

    def watch(what: str, details: dict[str, Any]) -> None:
        report(what, details)
        if len(progress.of("waiting")) >= 5:  # the old code paused here for ever
            ctx.stop.set()

    ctx.progress = watch  # type: ignore[method-assign]
    with pytest.raises(HomeError, match="gone"):
        run_recorder(ctx, "syn", disk_usage=disk_usage)
    assert not progress.of("waiting")
    assert [r.end_reason for r in rows_of(db)] == ["complete"]
    assert any(p.suffix == ".flac" for p in ctx.home.spool.iterdir())
