"""A fast readings stream (MPU-6050 IMU on the fake I2C bus) through the recorder into Arrow
chunks: gapless, timed by sample counts, exact values; crashes salvaged to the last batch."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import select

from fieldstation.recording.job import ContinuousSlot, run_recorder
from fieldstation.recording.readings import FORMAT, read_chunk
from fieldstation.recording.recovery import recover
from fieldstation.sensors.readings.mpu6050 import MPU6050Sensor, scale_samples
from fieldstation.store.models import Event, Recording
from fieldstation.testing.i2c import FakeBus, FakeMPU6050

IMU = {"name": "imu", "kind": "i2c", "chip": "mpu6050", "bus": "fake", "rate": 200, "chunk": "60s"}


def rows(db: Any, sensor: str = "imu") -> list[Recording]:
    with db.session() as session:
        query = select(Recording).where(Recording.sensor == sensor).order_by(Recording.id)
        return list(session.scalars(query))


def imu(clock: Any) -> tuple[MPU6050Sensor, FakeMPU6050]:
    chip = FakeMPU6050(clock)
    return MPU6050Sensor(FakeBus({0x68: chip}).opener(), rate=200, clock=clock), chip


def test_ten_minutes_at_200_hz_are_gapless_exact_and_timed_by_sample_counts(
    make_station, make_ctx, db, home
):  # type: ignore[no-untyped-def]
    ctx, progress = make_ctx(make_station(IMU))
    sensor, chip = imu(ctx.clock)
    start = ctx.clock.now()
    end = start + timedelta(minutes=10)
    run_recorder(
        ctx,
        "imu",
        sensor=sensor,
        slots=lambda now: ContinuousSlot(start, end) if now < end else None,
        until=end,
    )
    recorded = rows(db)
    assert [r.frames for r in recorded] == [12000] * 10
    assert sum(r.frames for r in recorded) == 200 * 600
    assert {r.media for r in recorded} == {"readings"} and {r.rate for r in recorded} == {200}
    assert [r.end_reason for r in recorded] == ["complete"] * 10  # the last one fills up too
    assert len({r.session_id for r in recorded}) == 1
    for before, after in zip(recorded, recorded[1:], strict=False):
        # contiguous to the microsecond: the next chunk starts where this one's frames end
        assert after.started_at == before.started_at + timedelta(seconds=60)
        assert after.start_frame == before.start_frame + before.frames
    assert recorded[0].started_at == start
    assert recorded[0].extra["stream"]["fields"][0] == "accel_x"
    data = []
    for row in recorded:
        spec, frames, end_reason, complete = read_chunk(home.root / row.path)
        assert complete and end_reason == row.end_reason
        assert spec.started_at == row.started_at and spec.start_frame == row.start_frame
        data.append(frames)
    values = np.concatenate(data)
    expected = scale_samples(chip.samples(0, 120_000), 2, 250)
    assert values.dtype == np.float32 and values.shape == (120_000, 6)
    np.testing.assert_array_equal(values, expected)
    assert chip.lost == 0 and sensor.health().overflows == 0


class KillingSensor:
    """The IMU, SIGKILLing its own process in read number ``kill_at`` (a real crash between
    two batches of the open chunk)."""

    def __init__(self, inner: MPU6050Sensor, kill_at: int) -> None:
        self.inner = inner
        self.kill_at = kill_at
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def describe(self) -> Any:
        return self.inner.describe()

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Any:
        self.reads += 1
        if self.reads == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()

    def health(self) -> Any:
        return self.inner.health()


def test_sigkill_mid_chunk_is_salvaged_to_its_last_whole_batch(make_station, make_ctx, db, home):  # type: ignore[no-untyped-def]
    ctx, progress = make_ctx(make_station(IMU))
    sensor, chip = imu(ctx.clock)
    start = ctx.clock.now()
    end = start + timedelta(minutes=10)
    # 20-frame blocks: chunk 0 is reads 1..600; read 851 kills the recorder 250 blocks
    # (5000 frames) into chunk 1
    killer = KillingSensor(sensor, kill_at=851)

    def child() -> None:
        run_recorder(
            ctx,
            "imu",
            sensor=killer,  # type: ignore[arg-type]
            slots=lambda now: ContinuousSlot(start, end) if now < end else None,
            until=end,
        )

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(120)
    assert process.exitcode == -signal.SIGKILL
    spooled = sorted(home.spool.glob("*.arrows"))
    assert len(spooled) == 1
    # the cut file lacks its end: no closing batch, no end-of-stream marker
    spec, frames, end_reason, _ = read_chunk(spooled[0])
    assert end_reason is None and len(frames) == 5000
    report = recover(ctx)
    assert len(report.salvaged) == 1
    recorded = rows(db)
    assert [(r.chunk_index, r.frames, r.end_reason) for r in recorded] == [
        (0, 12000, "complete"),
        (1, 5000, "recovered"),
    ]
    spec, frames, end_reason, complete = read_chunk(home.root / recorded[1].path)
    assert complete and end_reason == "recovered"
    assert spec.started_at == start + timedelta(seconds=60)
    sensor.open()  # the chip in this process configured as the child's was (rate, ranges)
    sensor.close()
    expected = scale_samples(chip.samples(12000, 17000), 2, 250)
    np.testing.assert_array_equal(frames, expected)


@pytest.mark.parametrize("keep", [1, 7])
def test_a_truncated_chunk_keeps_every_whole_batch_before_the_cut(
    make_station, make_ctx, home, tmp_path: Path, keep: int
):  # type: ignore[no-untyped-def]
    from fieldstation.recording.chunk import ChunkWriter

    ctx, _ = make_ctx(make_station(IMU))
    sensor, chip = imu(ctx.clock)
    sensor.open()
    from fieldstation.recording.metadata import ChunkSpec

    spec = ChunkSpec(
        station="s", sensor="imu", session_id="x", chunk_index=0, start_frame=0,
        started_at=ctx.clock.now(), stream=sensor.describe(), deployment_id=1,
        config_hash="h", version="t", latitude=0.0, longitude=0.0, elevation=0.0,
    )  # fmt: skip
    writer = ChunkWriter(tmp_path, spec, sidecar=False)
    sizes = []
    blocks = []
    for _ in range(10):
        block = sensor.read()
        assert block is not None
        writer.write(block.data)
        blocks.append(block.data)
        sizes.append(writer.audio.stat().st_size)  # each batch is in the file once written
    writer.finish("complete")
    whole = writer.audio.read_bytes()
    damaged = tmp_path / "damaged.arrows"
    # cut inside batch number keep + 1 (between the ends of batches keep and keep + 1)
    cut = (sizes[keep - 1] + sizes[keep]) // 2
    damaged.write_bytes(whole[:cut])
    _, got, end_reason, complete = read_chunk(damaged)
    assert not complete and end_reason is None
    out = tmp_path / "out.arrows"
    frames = FORMAT.salvage(damaged, spec, out, "recovered")
    assert frames == sum(len(b) for b in blocks[:keep])
    spec2, reason, n = FORMAT.inspect(out)
    assert (reason, n) == ("recovered", frames) and spec2 == spec
    np.testing.assert_array_equal(read_chunk(out)[1], np.concatenate(blocks[:keep]))
    # nothing readable: nothing salvaged, no file
    damaged.write_bytes(whole[:10])
    assert FORMAT.salvage(damaged, spec, tmp_path / "none.arrows", "recovered") == 0
    assert not (tmp_path / "none.arrows").exists()
    assert pa.ipc.open_stream(str(out)).schema.field("accel_x").metadata[b"unit"] == b"m/s2"


class Stalling:
    """The IMU whose reader stalls once (1 s of the clock, longer than the 85-sample FIFO
    holds at 200 Hz) before read number ``at``: samples are lost on the chip."""

    def __init__(self, inner: MPU6050Sensor, at: int) -> None:
        self.inner, self.at, self.reads = inner, at, 0

    def describe(self) -> Any:
        return self.inner.describe()

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Any:
        self.reads += 1
        if self.reads == self.at:
            self.inner.clock.sleep(1.0)
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()

    def health(self) -> Any:
        return self.inner.health()


def test_a_fifo_overflow_ends_the_chunk_and_starts_a_new_session(make_station, make_ctx, db):  # type: ignore[no-untyped-def]
    imu = {"name": "imu", "kind": "i2c", "chip": "mpu6050", "bus": "fake", "chunk": "10s"}
    ctx, progress = make_ctx(make_station(imu))
    chip = FakeMPU6050(ctx.clock)
    sensor = MPU6050Sensor(FakeBus({0x68: chip}).opener(), rate=200, clock=ctx.clock)
    start = ctx.clock.now()
    end = start + timedelta(seconds=30)
    run_recorder(
        ctx,
        "imu",
        sensor=Stalling(sensor, at=120),  # type: ignore[arg-type]
        slots=lambda now: ContinuousSlot(start, end) if now < end else None,
        until=end,
    )
    assert chip.lost > 0 and sensor.health().overflows == 1
    with db.session() as session:
        rows = list(session.scalars(select(Recording).order_by(Recording.id)))
        events = list(session.scalars(select(Event.kind)))
    assert "frames_lost" in events
    sessions = [r.session_id for r in rows]
    assert len(set(sessions)) == 2
    cut = next(r for r in rows if r.end_reason == "device_error")
    assert cut.frames == 119 * 20 - 2000  # the blocks before the stall, after chunk 0
    assert cut.extra.get("input_overflow") is True
