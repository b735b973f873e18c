"""Video chunks: H.264 in Matroska written by the recorder from the real ffmpeg capture (lavfi
synthetic camera, a real RTSP camera), frame-exact chunks, embedded spec, salvage after SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from fieldstation.clock import SystemClock, VirtualClock
from fieldstation.job import JobContext
from fieldstation.recording.chunk import ChunkWriter
from fieldstation.recording.job import ContinuousSlot, run_recorder
from fieldstation.recording.media import format_of_path, media_format
from fieldstation.recording.metadata import ChunkSpec, MetadataError
from fieldstation.recording.recovery import recover
from fieldstation.recording.video import FORMAT
from fieldstation.sensors.base import StreamDescription
from fieldstation.store.models import Event, Recording
from fieldstation.testing.disk import FillDiskAt

SMALL = {
    "name": "cam",
    "kind": "video",
    "source": "lavfi:testsrc2=size=320x240:rate=25",
    "width": 320,
    "height": 240,
    "fps": 25,
    "preset": "ultrafast",
    "min_free": "1MB",
}


def rows_of(db: Any, sensor: str = "cam") -> list[Recording]:
    with db.session() as session:
        query = select(Recording).where(Recording.sensor == sensor).order_by(Recording.id)
        return list(session.scalars(query))


def decoded(path: Path) -> list[int]:
    """Display indices (pts x fps) of every frame PyAV decodes from ``path``, in order."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        return [round(frame.pts * stream.time_base * rate) for frame in container.decode(stream)]


def ffprobe_frames(path: Path) -> int:
    """Frames ffprobe decodes from ``path`` (``-count_frames``); fails on any error output."""
    done = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,codec_name,width,height",
            "-of",
            "default=nw=1",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), f"{path}: {done.stderr}"
    fields = dict(line.split("=", 1) for line in done.stdout.split())
    assert fields["codec_name"] == "h264"
    return int(fields["nb_read_frames"])


def spec_for(stream: StreamDescription, chunk_index: int = 0) -> ChunkSpec:
    return ChunkSpec(
        station="st",
        sensor="cam",
        session_id="s1",
        chunk_index=chunk_index,
        start_frame=0,
        started_at=datetime(2026, 6, 1, tzinfo=UTC),
        stream=stream,
        deployment_id=1,
        config_hash="h",
        version="test",
        latitude=1.5,
        longitude=2.5,
        elevation=3.0,
    )


STREAM = StreamDescription(
    media="video",
    rate=25,
    shape=(120, 160, 3),
    dtype="uint8",
    format="mkv",
    codec="h264",
    options={"crf": 23, "preset": "ultrafast"},
)


def moving(frames: int, start: int = 0) -> np.ndarray:
    """``frames`` RGB frames (120 x 160) of a bar moving one pixel per frame on a gradient."""
    out = np.zeros((frames, 120, 160, 3), dtype=np.uint8)
    out[..., 0] = np.arange(160, dtype=np.uint8)[None, None, :]
    for i in range(frames):
        x = (start + i) % 150
        out[i, :, x : x + 10, 1] = 255
    return out


def write_chunk(path: Path, frames: np.ndarray, spec: ChunkSpec | None = None) -> ChunkSpec:
    spec = spec or spec_for(STREAM)
    writer = FORMAT.open(path, spec)
    writer.write(frames)
    writer.close("complete")
    return spec


# --- the writer on its own ---


def test_a_chunk_holds_every_frame_at_its_index_and_says_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "a.mkv"
    frames = moving(60)
    spec = write_chunk(path, frames)
    assert format_of_path(path) is media_format("video") is FORMAT
    assert FORMAT.inspect(path) == (spec, None, 60)
    assert decoded(path) == list(range(60))  # pts = frame index / fps, no gap, no reorder
    assert ffprobe_frames(path) == 60
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (160, 120, 25)
        packets = [p for p in container.demux(stream) if p.size]
        assert packets[0].is_keyframe  # each chunk starts with an IDR frame
        container.seek(0)
        first = next(container.decode(stream)).to_ndarray(format="rgb24")
    error = np.abs(first.astype(int) - frames[0].astype(int)).mean()
    assert error < 6, f"first frame differs by {error:.1f} levels on average"


def test_inspect_refuses_a_video_without_the_fieldstation_tag(tmp_path: Path) -> None:
    plain = tmp_path / "plain.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:d=1"]
        + ["-c:v", "libx264", "-preset", "ultrafast", str(plain)],
        check=True,
        timeout=60,
    )
    with pytest.raises(MetadataError, match="FIELDSTATION"):
        FORMAT.inspect(plain)
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(4000))
    with pytest.raises(MetadataError):
        FORMAT.inspect(garbage)


def test_salvage_keeps_the_frames_before_a_truncation(tmp_path: Path) -> None:
    whole = tmp_path / "whole.mkv"
    spec = write_chunk(whole, moving(100))
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.mkv"
    kept = FORMAT.salvage(cut, spec, out, "recovered")
    assert 20 < kept < 100
    assert FORMAT.inspect(out) == (spec, None, kept)
    assert decoded(out) == list(range(kept))
    assert ffprobe_frames(out) == kept


def test_salvage_of_nothing_decodable_writes_nothing(tmp_path: Path) -> None:
    whole = tmp_path / "whole.mkv"
    spec = write_chunk(whole, moving(10))
    header_only = tmp_path / "header.mkv"
    header_only.write_bytes(whole.read_bytes()[:300])
    out = tmp_path / "out.mkv"
    assert FORMAT.salvage(header_only, spec, out, "recovered") == 0
    assert not out.exists()
    noise = tmp_path / "noise.mkv"
    noise.write_bytes(os.urandom(10000))
    assert FORMAT.salvage(noise, spec, out, "recovered") == 0
    assert not out.exists()


def test_a_chunk_in_data_without_a_row_gets_its_row_back(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home
):
    config = make_station(SMALL)
    ctx, _ = make_ctx(config)
    stream = StreamDescription(
        media="video",
        rate=25,
        shape=(120, 160, 3),
        dtype="uint8",
        format="mkv",
        codec="h264",
        options={"crf": 23, "preset": "ultrafast"},
    )
    spec = ChunkSpec(
        station=config.station.id,
        sensor="cam",
        session_id="s9",
        chunk_index=3,
        start_frame=75,
        started_at=datetime(2026, 6, 1, 0, 0, 3, tzinfo=UTC),
        stream=stream,
        deployment_id=ctx.deployment_id,
        config_hash="h",
        version="test",
        latitude=0.0,
        longitude=0.0,
        elevation=0.0,
    )
    path = home.root / spec.relpath()
    path.parent.mkdir(parents=True)
    write_chunk(path, moving(25), spec)
    report = recover(ctx)
    assert report.registered == [spec.relpath()]
    [row] = rows_of(db)
    assert (row.frames, row.chunk_index, row.session_id, row.start_frame) == (25, 3, "s9", 75)
    assert row.started_at == spec.started_at


# --- the recorder with the real capture ---


def check_contiguous(rows: list[Recording], home: Any, fps: int) -> None:
    """Every chunk decodes to exactly its row's frames, pts 0..n-1, and starts where the one
    before it ends (start + frames / fps, to the microsecond)."""
    for row in rows:
        path = home.root / row.path
        assert ffprobe_frames(path) == row.frames, row.path
        assert FORMAT.inspect(path)[2] == row.frames
    for a, b in zip(rows, rows[1:], strict=False):
        assert b.start_frame == a.start_frame + a.frames
        micros = (a.frames * 2_000_000 + fps) // (2 * fps)
        assert b.started_at == a.started_at + timedelta(microseconds=micros)


def record_lavfi(make_station, make_ctx, sensor: dict[str, Any], seconds: float) -> Any:  # type: ignore[no-untyped-def]
    config = make_station(sensor)
    ctx, progress = make_ctx(config)
    start = ctx.clock.now()
    end = start + timedelta(seconds=seconds)

    def slots(now: datetime) -> ContinuousSlot | None:
        return ContinuousSlot(start, end) if now < end else None

    run_recorder(ctx, sensor["name"], slots=slots, until=end)
    return ctx, progress, start


def test_lavfi_camera_records_frame_exact_chunks(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home, spool_empty
):
    _, progress, start = record_lavfi(make_station, make_ctx, {**SMALL, "chunk": "2s"}, 7.0)
    rows = rows_of(db)
    assert [(r.frames, r.end_reason) for r in rows] == [(50, "complete")] * 3 + [(25, "window_end")]
    assert rows[0].started_at == start
    assert [r.media for r in rows] == ["video"] * 4
    assert [c["frames"] for c in progress.of("chunk")] == [r.frames for r in rows]
    check_contiguous(rows, home, 25)
    for r in rows:
        assert decoded(home.root / r.path) == list(range(r.frames))
    assert spool_empty()


@pytest.mark.slow
@pytest.mark.heavy
def test_ten_minutes_of_720p25_are_ten_exact_one_minute_chunks(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home, spool_empty
):
    sensor = {
        **SMALL,
        "source": "lavfi:testsrc2=size=1280x720:rate=25",
        "width": 1280,
        "height": 720,
        "chunk": "60s",
    }
    began = time.monotonic()
    ctx, _, start = record_lavfi(make_station, make_ctx, sensor, 600.0)
    recorded = time.monotonic() - began
    rows = rows_of(db)
    assert [(r.frames, r.end_reason) for r in rows] == [(1500, "complete")] * 10
    assert ctx.clock.now() == start + timedelta(seconds=600)
    assert rows[0].started_at == start and rows[-1].started_at == start + timedelta(seconds=540)
    check_contiguous(rows, home, 25)  # ffprobe decodes each chunk: 1500 frames
    assert spool_empty()
    checked = time.monotonic() - began
    print(f"10 min of 720p25 recorded in {recorded:.0f} s, checked in {checked:.0f} s")


# --- SIGKILL of a recording process ---


def _killed_recorder(config: Any, home: Any, deployment_id: int, at_frame: int, pids: Path) -> None:
    """Run the recorder on a virtual clock and SIGKILL this process once the second chunk
    holds ``at_frame`` frames (patched in the forked child only); the PIDs of its children
    (the ffmpeg capture) are written to ``pids`` first."""
    import psutil

    write = ChunkWriter.write

    def write_then_die(self: ChunkWriter, data: Any) -> None:
        write(self, data)
        if self.spec.chunk_index == 1 and self.frames == at_frame:
            pids.write_text(" ".join(str(c.pid) for c in psutil.Process().children()))
            os.kill(os.getpid(), signal.SIGKILL)

    ChunkWriter.write = write_then_die  # type: ignore[method-assign]
    clock = VirtualClock(datetime(2026, 6, 1, tzinfo=UTC))
    ctx = JobContext(config, home, deployment_id, clock, name="recorder:cam")
    run_recorder(ctx, "cam")


def _running(pid: int) -> bool:
    """True while ``pid`` runs (not gone, not a zombie waiting for a parent to reap it)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigkill_mid_chunk_is_recovered_and_recording_goes_on(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home, spool_empty, tmp_path
):
    config = make_station({**SMALL, "chunk": "4s"})  # 100 frames
    ctx, progress = make_ctx(config)
    pids = tmp_path / "pids"
    child = multiprocessing.get_context("fork").Process(
        target=_killed_recorder, args=(config, home, ctx.deployment_id, 80, pids)
    )
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL, "the recorder did not die mid-chunk"
    # its ffmpeg, writing into a pipe nobody reads any more, dies of EPIPE: no orphan left
    [ffmpeg] = [int(pid) for pid in pids.read_text().split()]
    deadline = time.monotonic() + 30
    while _running(ffmpeg):
        assert time.monotonic() < deadline, f"ffmpeg {ffmpeg} outlived its recorder"
        time.sleep(0.05)
    assert [(r.chunk_index, r.frames) for r in rows_of(db)] == [(0, 100)]
    cut = [p for p in home.spool.iterdir() if p.suffix == ".mkv"]
    assert len(cut) == 1
    # the restarted recorder recovers its spool first, then records on
    progress.stop_after_chunks = 2
    run_recorder(ctx, "cam")
    rows = rows_of(db)
    assert [(r.chunk_index, r.end_reason) for r in rows] == [
        (0, "complete"),
        (1, "recovered"),
        (0, "complete"),
        (1, "complete"),
    ]
    first, salvaged, *later = rows
    assert salvaged.session_id == first.session_id != later[0].session_id
    # the frames that reached the disk before the kill: all but the last cluster (about 1 s)
    # and the encoder's delay
    assert 40 <= salvaged.frames < 80, salvaged.frames
    path = home.root / salvaged.path
    assert ffprobe_frames(path) == salvaged.frames  # ffprobe reads it without an error
    assert decoded(path) == list(range(salvaged.frames))
    spec, _, frames = FORMAT.inspect(path)
    assert (spec.session_id, spec.chunk_index, frames) == (first.session_id, 1, salvaged.frames)
    assert salvaged.started_at == first.started_at + timedelta(seconds=4)
    check_contiguous([first, salvaged], home, 25)
    check_contiguous(later, home, 25)
    assert spool_empty()


# --- a real RTSP camera ---


class Watch:
    """Progress reports of a recorder running in a thread, waited for by condition."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.changed = threading.Condition()

    def __call__(self, what: str, details: dict[str, Any]) -> None:
        with self.changed:
            self.reports.append((what, details))
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}: {self.reports[-5:]}"
                self.changed.wait(min(left, 0.2))

    def chunks(self) -> int:
        return sum(1 for what, _ in self.reports if what == "chunk")


@pytest.fixture
def camera(require: Any) -> Any:
    from fieldstation.testing.rtsp import RtspCamera, rtsp_available

    why = rtsp_available()
    if why is not None:
        require("rtsp", why)
    with RtspCamera(width=320, height=240, fps=25) as cam:
        yield cam


@pytest.mark.slow
def test_rtsp_camera_records_and_comes_back_after_the_server_is_gone(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home, camera
):
    from fieldstation.sensors.camera import VideoSensor

    # a queue of 10 s: this test is about the camera going away, not about a busy machine
    # dropping frames while the first chunk opens
    sensor_config = {**SMALL, "source": camera.url, "chunk": "4s", "timeout": "5s"}
    config = make_station({**sensor_config, "queue_frames": 250})
    ctx, _ = make_ctx(config, SystemClock())
    watch = Watch()
    ctx.progress = watch
    sensor = VideoSensor(config.sensor("cam"), ctx.clock)  # type: ignore[arg-type]
    failed: list[BaseException] = []

    def run() -> None:
        try:
            run_recorder(ctx, "cam", sensor=sensor)
        except BaseException as error:  # pragma: no cover - reported below
            failed.append(error)

    thread = threading.Thread(target=run, name="recorder-under-test")
    thread.start()
    try:
        watch.wait_for(lambda: watch.chunks() >= 2, 60, "two chunks")
        # stop the camera in the middle of the third chunk (1 to 2 s into it)
        watch.wait_for(lambda: sensor.health().frames >= 225, 30, "mid-chunk")
        camera.stop()
        watch.wait_for(
            lambda: any(r.end_reason == "device_error" for r in rows_of(db)), 60, "device_error"
        )
        camera.start()
        watch.wait_for(
            lambda: len({r.session_id for r in rows_of(db) if r.end_reason == "complete"}) >= 2,
            90,
            "a chunk of a new session",
        )
    finally:
        ctx.stop_reason = "stopped"
        ctx.stop.set()
        thread.join(60)
    assert not thread.is_alive() and not failed, failed
    rows = rows_of(db)
    first = [r for r in rows if r.session_id == rows[0].session_id]
    assert [(r.frames, r.end_reason) for r in first[:2]] == [(100, "complete")] * 2
    assert first[2].end_reason == "device_error" and 25 <= first[2].frames < 100
    later = [r for r in rows if r.session_id != rows[0].session_id]
    assert later and later[0].end_reason == "complete" and later[0].frames == 100
    check_contiguous(first, home, 25)
    for row in rows:
        assert decoded(home.root / row.path) == list(range(row.frames))
    with db.session() as session:
        events = list(session.scalars(select(Event).where(Event.kind == "device_error")))
    assert events and "rtsp://" in events[0].message
    assert sensor.health().state == "closed" and sensor._process is None


# --- a full disk ---


class TestFullDisk:
    @pytest.fixture
    def home(self, small_disk: Path) -> Any:
        """The station home (and its database) on a real 20 MB filesystem."""
        from fieldstation.home import StationHome

        return StationHome(small_disk / "home").ensure()

    def test_a_full_disk_mid_chunk_pauses_and_the_cut_chunk_is_salvaged(  # type: ignore[no-untyped-def]
        self, make_station, make_ctx, db, home, small_disk
    ):
        """The disk fills in the middle of the third chunk: PyAV's write meets ENOSPC (an
        ``OSError``), the recorder pauses (``disk_low``) instead of failing, and once space is
        back the cut chunk is remuxed up to its last decodable frame, committed ``disk_low``,
        and recording goes on."""
        from fieldstation.sensors.camera import VideoSensor

        config = make_station({**SMALL, "chunk": "2s", "min_free": "0"})
        ctx, progress = make_ctx(config)
        filler = small_disk / "filler"
        sensor = FillDiskAt(VideoSensor(config.sensor("cam"), ctx.clock), 130, filler)  # type: ignore[arg-type]
        report = progress.__call__
        freed: list[Any] = []

        def watch(what: str, details: dict[str, Any]) -> None:
            report(what, details)
            full = [d for d in progress.of("waiting") if "disk full" in d.get("reason", "")]
            if not freed and len(full) >= 5:  # 5 s (virtual) of a full disk
                filler.unlink()
                freed.append(ctx.clock.now())
            if freed and len([1 for w, _ in progress.reports[-2:] if w == "chunk"]) == 2:
                ctx.stop.set()

        ctx.progress = watch  # type: ignore[method-assign]
        run_recorder(ctx, "cam", sensor=sensor)  # returns at the stop: no exception
        assert freed, progress.reports[-5:]
        rows = rows_of(db)
        reasons = [(r.chunk_index, r.end_reason) for r in rows]
        assert reasons[:2] == [(0, "complete"), (1, "complete")], reasons
        cut = [r for r in rows if r.end_reason == "disk_low"]
        assert len(cut) == 1 and cut[0].chunk_index == 2 and 0 < cut[0].frames < 50, reasons
        path = home.root / cut[0].path
        assert ffprobe_frames(path) == cut[0].frames
        assert decoded(path) == list(range(cut[0].frames))
        later = [r for r in rows if r.session_id != rows[0].session_id]
        assert later and all(r.end_reason == "complete" and r.frames == 50 for r in later)
        assert not any(home.spool.iterdir())
