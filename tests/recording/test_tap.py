"""The recorder's live tap: levels, the wire, drops for slow readers, and a recorder watched by
five live subscribers losing no sample and keeping its slot-start error (issue 18)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from sqlalchemy import select

from fieldstation.clock import SystemClock
from fieldstation.home import StationHome
from fieldstation.recording.job import ContinuousSlot, run_recorder
from fieldstation.recording.levels import (
    FLOOR_DB,
    SpectrogramScroll,
    levels,
    spectrogram_column,
    to_float,
)
from fieldstation.recording.tap import (
    MAX_FRAMES,
    LiveBlock,
    LiveSubscriber,
    LiveTap,
    tap_address,
)
from fieldstation.sensors.base import Block, StreamDescription, audio_description
from fieldstation.store.models import Event, Recording

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)


# --- levels ---
def test_a_full_scale_sine_peaks_at_0_dbfs_and_its_rms_is_minus_3_01() -> None:
    rate = 48000
    t = np.arange(rate) / rate
    sine = np.sin(2 * np.pi * 1000 * t)[:, None]
    got = levels(sine)
    assert got.peak[0] == pytest.approx(0.0, abs=1e-6)
    assert got.rms[0] == pytest.approx(-3.0103, abs=1e-3)
    half = levels(0.5 * sine)  # -6.02 dB less, both
    assert half.peak[0] == pytest.approx(-6.0206, abs=1e-3)
    assert half.rms[0] == pytest.approx(-9.0309, abs=1e-3)


def test_int16_full_scale_and_silence() -> None:
    data = np.array([[-32768, 0], [16384, 0]], dtype=np.int16)
    got = levels(to_float(data))
    assert got.peak == (pytest.approx(0.0), FLOOR_DB)
    assert got.rms[1] == FLOOR_DB
    assert levels(np.zeros((0, 2))).peak == (FLOOR_DB, FLOOR_DB)


def test_a_spectrogram_column_shows_a_sine_in_its_bin() -> None:
    rate, n_fft = 48000, 512
    k = 37  # a bin-centred sine
    t = np.arange(4800) / rate
    sine = 0.25 * np.sin(2 * np.pi * (k * rate / n_fft) * t)
    column = spectrogram_column(sine, n_fft)
    assert column.shape == (n_fft // 2 + 1,)
    assert int(np.argmax(column)) == k
    assert column[k] == pytest.approx(20 * np.log10(0.25), abs=0.05)
    assert column[k + 20] < column[k] - 60  # far from the tone: the window's side lobes only
    assert spectrogram_column(np.zeros(10), n_fft).max() == FLOOR_DB
    # a block shorter than n_fft is centred, not lost under the window's tail
    short = spectrogram_column(sine[:200], n_fft)
    assert int(np.argmax(short)) == k and short[k] > 20 * np.log10(0.25) - 12


def test_the_scroll_cuts_columns_at_a_steady_pace_whatever_the_blocks() -> None:
    rate = 48000
    rng = np.random.default_rng(7)
    signal = rng.normal(0, 0.1, rate)
    whole = SpectrogramScroll(rate, 512, 32.0).feed(signal)
    scroll = SpectrogramScroll(rate, 512, 32.0)
    pieces: list[np.ndarray] = []
    cuts = np.sort(rng.integers(0, rate, 40))
    for part in np.split(signal, cuts):
        pieces.extend(scroll.feed(part))
    assert len(whole) == len(pieces) == rate // 1500
    for a, b in zip(whole, pieces, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


# --- the tap and its readers ---
@pytest.fixture
def tap(home: StationHome) -> Iterator[LiveTap]:
    built = LiveTap.open(home, "mic", audio_description(48000, 2, "int16"))
    assert built is not None
    yield built
    built.close()


def block(start: int, frames: int = 960, channels: int = 2, value: int = 1000) -> Block:
    data = np.full((frames, channels), value, dtype=np.int16)
    data[:, 0] = np.arange(start, start + frames) % 30000
    return Block(data, start, T0 + timedelta(seconds=start / 48000))


def publish_until_received(tap: LiveTap, live: LiveSubscriber, start: int = 0) -> LiveBlock:
    """Publish blocks until ``live`` receives one (its subscription takes a moment to reach
    the tap: that is the join of a new viewer, not a loss)."""
    for k in range(1000):
        tap.publish(block(start + k * 960))
        got = live.receive(0.01)
        if got is not None:
            return got
    raise AssertionError("the subscriber never received a block")


def test_without_subscribers_nothing_is_serialised(tap: LiveTap) -> None:
    for k in range(100):
        tap.publish(block(k * 960))
    assert not tap.listening
    assert tap.published == 0 and tap.skipped == 100


def test_a_subscriber_receives_blocks_scaled_to_full_scale(home: StationHome, tap: LiveTap) -> None:
    with LiveSubscriber(home, "mic") as live:
        first = publish_until_received(tap, live)
        assert tap.listening
        start = first.start_frame + 960
        tap.publish(block(start))
        got = live.receive(2.0)
    assert got is not None
    assert (got.media, got.rate, got.start_frame) == ("audio", 48000, start)
    assert got.captured_at == T0 + timedelta(seconds=start / 48000)
    assert got.data.shape == (960, 2) and got.data.dtype == np.float32
    expected = np.arange(start, start + 960) % 30000 / 32768
    np.testing.assert_allclose(got.data[:, 0], expected, rtol=1e-6)
    assert np.all(got.data[:, 1] == np.float32(1000 / 32768))
    # the last viewer gone: the tap stops serialising
    deadline = time.monotonic() + 5
    while tap.listening and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not tap.listening


def test_a_long_block_is_cut_to_its_last_max_frames(home: StationHome, tap: LiveTap) -> None:
    with LiveSubscriber(home, "mic") as live:
        publish_until_received(tap, live)
        big = block(10**6, frames=MAX_FRAMES + 5000)
        tap.publish(big)
        got = live.receive(2.0)
    assert got is not None
    assert got.data.shape == (MAX_FRAMES, 2)
    assert got.start_frame == 10**6 + 5000
    assert got.captured_at == T0 + timedelta(microseconds=round((10**6 + 5000) * 1e6 / 48000))


def test_video_sends_the_last_frame_as_a_jpeg_at_most_video_fps(home: StationHome) -> None:
    from io import BytesIO

    from PIL import Image

    stream = StreamDescription("video", 10, (48, 64, 3), "uint8", "mp4", "h264")
    video = LiveTap.open(home, "cam", stream, video_fps=1000.0)
    assert video is not None
    try:
        frames = np.zeros((3, 48, 64, 3), dtype=np.uint8)
        frames[2, :, :, 0] = 255  # the last frame is red
        with LiveSubscriber(home, "cam") as live:
            got = None
            for k in range(1000):
                video.publish(Block(frames, 3 * k, T0))
                got = live.receive(0.01)
                if got is not None:
                    break
            assert got is not None and got.jpeg is not None
            image = np.asarray(Image.open(BytesIO(got.jpeg)).convert("RGB"))
            assert image.shape == (48, 64, 3)
            assert image[..., 0].mean() > 240 and image[..., 1].mean() < 15
            assert got.captured_at == T0 + timedelta(seconds=0.2)  # frame 2 at 10 fps
            video.video_fps = 0.001  # then at most one frame per 1000 s
            sent = video.published
            for k in range(20):
                video.publish(Block(frames, 3000 + 3 * k, T0))
            assert video.published <= sent + 1
    finally:
        video.close()


def test_a_long_home_path_gets_a_short_socket_name(tmp_path: Path) -> None:
    home = StationHome(tmp_path / ("x" * 120))
    address = tap_address(home, "mic")
    assert address.startswith("ipc://") and len(address) < 108
    assert address == tap_address(home.root, "mic")


@pytest.mark.slow
def test_a_subscriber_that_never_reads_is_dropped_never_blocks(
    home: StationHome, tap: LiveTap
) -> None:
    """5000 blocks of 16384 stereo frames (128 KiB each as float32: 640 MiB if all were kept)
    published while one viewer never reads and another reads everything it can: each publish
    returns at once, memory stays bounded and the stalled viewer holds only a few messages."""
    process = psutil.Process()
    frames = 16384
    data = np.zeros((frames, 2), dtype=np.int16)
    with LiveSubscriber(home, "mic") as stalled, LiveSubscriber(home, "mic") as reader:
        publish_until_received(tap, stalled)
        received = 0
        stop = threading.Event()

        def read() -> None:
            nonlocal received
            while not stop.is_set():
                if reader.receive(0.05) is not None:
                    received += 1

        thread = threading.Thread(target=read)
        thread.start()
        rss_before = process.memory_info().rss
        worst = 0.0
        try:
            for k in range(5000):
                started = time.perf_counter()
                tap.publish(Block(data, k * frames, T0))
                worst = max(worst, time.perf_counter() - started)
        finally:
            stop.set()
            thread.join(10)
        grown = process.memory_info().rss - rss_before
        kept = 0
        while stalled.receive(0.2) is not None:
            kept += 1
    print(f"stalled viewer kept {kept}, reader got {received}, worst publish {worst * 1e3:.2f} ms")
    assert tap.published >= 4999  # every block went out: nobody made the tap wait or fail
    assert kept < 100, f"the stalled viewer kept {kept} messages: not bounded"
    assert received > 0
    assert grown < 64 * 2**20, f"memory grew by {grown / 2**20:.0f} MiB"
    # never blocks: the slowest publish stayed far below a 20 ms block even on a busy machine
    assert worst < 0.5, f"a publish took {worst * 1000:.0f} ms"


# --- a real recorder watched by five subscribers ---
def paced_run(
    make_station: Any, make_ctx: Any, db: Any, name: str, viewers: int
) -> tuple[list[Recording], list[datetime], dict[str, int]]:
    """Record 6 slots of 1 s every 1.5 s of a 48 kHz synthetic sensor in 20 ms blocks in real
    time while ``viewers`` live subscribers watch (the last of them never reads); returns the
    rows, the slot starts and the blocks each reading viewer received."""
    sensor = {
        "name": name,
        "kind": "synthetic",
        "sample_rate": 48000,
        "chunk": "0.5s",
        "block": "0.02s",
        "min_free": "1MB",
    }
    ctx, progress = make_ctx(make_station(sensor), SystemClock())
    clock = SystemClock()
    first = clock.now() + timedelta(seconds=1.5)
    starts = [first + timedelta(seconds=1.5 * k) for k in range(6)]

    def slots(now: datetime) -> ContinuousSlot | None:
        for start in starts:
            if start + timedelta(seconds=1) > now:
                return ContinuousSlot(start, start + timedelta(seconds=1))
        return None

    received: dict[str, int] = {}
    stop = threading.Event()
    subscribers = [LiveSubscriber(ctx.home, name) for _ in range(viewers)]

    def watch(index: int, live: LiveSubscriber) -> None:
        received[f"viewer{index}"] = 0
        while not stop.is_set():
            got = live.receive(0.05)
            if got is not None:
                levels(got.data)
                spectrogram_column(got.data)
                received[f"viewer{index}"] += 1

    threads = [
        threading.Thread(target=watch, args=(i, live)) for i, live in enumerate(subscribers[:-1])
    ]
    for thread in threads:
        thread.start()
    recorder = threading.Thread(
        target=run_recorder,
        args=(ctx, name),
        kwargs={"slots": slots, "until": starts[-1] + timedelta(seconds=1)},
    )
    recorder.start()
    try:
        recorder.join(30)
        assert not recorder.is_alive(), "the recorder did not finish its slots"
    finally:
        ctx.stop.set()
        recorder.join(10)
        stop.set()
        for thread in threads:
            thread.join(10)
        for live in subscribers:
            live.close()
    with db.session() as session:
        rows = list(
            session.scalars(
                select(Recording).where(Recording.sensor == name).order_by(Recording.id)
            )
        )
        lost = session.scalars(select(Event).where(Event.kind == "frames_lost")).all()
    assert not lost, [e.message for e in lost]
    return rows, starts, received


def check_no_sample_lost(rows: list[Recording], starts: list[datetime]) -> list[float]:
    """Every slot is one session of contiguous chunks holding every frame from its anchor to
    the slot end; returns each slot's start error (anchor - slot start) in ms."""
    errors = []
    sessions: dict[str, list[Recording]] = {}
    for row in rows:
        sessions.setdefault(row.session_id, []).append(row)
    assert len(sessions) == len(starts)
    for chunks, start in zip(sessions.values(), starts, strict=True):
        chunks.sort(key=lambda r: r.chunk_index)
        anchor = chunks[0].started_at.replace(tzinfo=UTC)
        for a, b in zip(chunks, chunks[1:], strict=False):
            assert b.start_frame == a.start_frame + a.frames
        end = start + timedelta(seconds=1)
        expected = (end - anchor) // timedelta(microseconds=1) * 48000 // 1_000_000
        assert sum(r.frames for r in chunks) == expected
        assert chunks[-1].end_reason == "window_end"
        errors.append((anchor - start).total_seconds() * 1000)
    return errors


@pytest.mark.slow
def test_five_live_subscribers_cost_the_recorder_no_sample_and_no_start_time(
    make_station: Any, make_ctx: Any, db: Any
) -> None:
    alone_rows, alone_starts, _ = paced_run(make_station, make_ctx, db, "alone", 0)
    watched_rows, watched_starts, received = paced_run(make_station, make_ctx, db, "watched", 5)
    alone = check_no_sample_lost(alone_rows, alone_starts)
    watched = check_no_sample_lost(watched_rows, watched_starts)
    print(f"slot-start error ms: alone {alone}, watched {watched}; blocks seen {received}")
    # every reading viewer saw the stream: 6 s of 20 ms blocks, less the joins
    assert len(received) == 4 and all(n > 100 for n in received.values()), received
    # the slot-start error (the capture time of a session's first frame minus the slot start)
    # stays what it is without viewers. Compared by the median: on a loaded machine single
    # slots of either run start 20-30 ms late (the thread woken late), viewers or not; a
    # viewer that blocked the recorder would delay every slot, and by far more than this.
    assert float(np.median(watched)) <= float(np.median(alone)) + 5.0, (alone, watched)
    assert max(watched) < max(alone) + 100.0, (alone, watched)


# --- the terminal level meter ---
def test_fieldstation_live_shows_the_level_of_a_running_tap(tmp_path: Path) -> None:
    import tomllib

    import tomli_w
    from typer.testing import CliRunner

    from fieldstation.cli.app import app
    from fieldstation.config import template_text

    home = StationHome(tmp_path / "home").ensure()
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data["sensors"] = [
        {"name": "mic", "kind": "synthetic", "sample_rate": 48000, "chunk": "1s"},
        {"name": "quiet", "kind": "synthetic", "sample_rate": 48000, "chunk": "1s"},
    ]
    station = tmp_path / "station.toml"
    station.write_text(tomli_w.dumps(data))
    tap = LiveTap.open(home, "mic", audio_description(48000, 1, "int16"))
    assert tap is not None
    t = np.arange(960) / 48000
    tone = np.rint(16384 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)[:, None]  # -6.02 dBFS
    stop = threading.Event()

    def publish() -> None:
        k = 0
        while not stop.wait(0.02):
            tap.publish(Block(tone, k * 960, T0))
            k += 1

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        result = CliRunner().invoke(app, ["live", "-c", str(station), "--seconds", "2"])
    finally:
        stop.set()
        thread.join(5)
        tap.close()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    mic = next(line for line in reversed(lines) if line.startswith("mic"))
    quiet = next(line for line in reversed(lines) if line.startswith("quiet"))
    assert "-6.0" in mic and "-9.0" in mic, result.output  # peak, RMS
    assert "no signal" in quiet
    bad = CliRunner().invoke(app, ["live", "nope", "-c", str(station), "--seconds", "1"])
    assert bad.exit_code != 0 and "no audio sensor named 'nope'" in bad.output
