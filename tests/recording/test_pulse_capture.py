"""Real capture: the audio sensor records the PulseAudio virtual mic while paplay plays birds."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import select

from fieldstation.clock import SystemClock
from fieldstation.recording.job import run_recorder
from fieldstation.store.models import Event, Recording

RATE = 32000  # the bird file's rate: the null sink runs at it, so nothing is resampled


PULSE_RATE = RATE
"""Rate of the virtual microphone (the ``pulse`` fixture of tests/conftest.py)."""


def best_correlation(recorded: np.ndarray, source: np.ndarray) -> tuple[float, int]:
    """Peak normalised cross-correlation of ``source`` inside ``recorded`` and its lag."""
    from scipy.signal import correlate

    lags = correlate(recorded, source, mode="valid", method="fft")
    lag = int(np.argmax(lags))
    segment = recorded[lag : lag + len(source)]
    return float(np.corrcoef(segment, source)[0, 1]), lag


@pytest.mark.samples
@pytest.mark.slow
def test_audio_sensor_records_what_reaches_the_virtual_mic(  # type: ignore[no-untyped-def]
    pulse, bird_files, make_station, make_ctx, db, home
):
    sensor = {
        "name": "mic",
        "kind": "audio",
        "device": "pulse",
        "sample_rate": RATE,
        "chunk": "3s",
        "timeout": "5s",
    }
    ctx, progress = make_ctx(make_station(sensor), SystemClock())
    thread = threading.Thread(target=run_recorder, args=(ctx, "mic"))
    thread.start()
    try:
        deadline = time.monotonic() + 30  # events, not guesses: generous for a busy machine
        # the stream delivers (its capture times settled: the recorder wrote its first
        # block) before anything plays
        while not any(home.spool.glob("*.flac")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(home.spool.glob("*.flac")), "the recorder wrote nothing"
        pulse.play(bird_files[0], latency_ms=200)  # a deep buffer: no underrun under load
        time.sleep(0.3)
    finally:
        ctx.stop_reason = "stopped"
        ctx.stop.set()
        thread.join(15)
    assert not thread.is_alive()
    with db.session() as session:
        rows = list(session.scalars(select(Recording).order_by(Recording.id)))
    assert rows and rows[-1].end_reason == "stopped"
    assert all(r.end_reason == "complete" for r in rows[:-1])
    assert len({r.session_id for r in rows}) == 1
    recorded = np.concatenate([sf.read(str(home.root / r.path), dtype="float64")[0] for r in rows])
    # PulseAudio drops the first few ms of a playback (TESTBED.md): compare from 50 ms on.
    source = sf.read(str(bird_files[0]), dtype="float64")[0][RATE // 20 :]
    assert len(recorded) > len(source)
    corr, lag = best_correlation(recorded, source)
    assert corr > 0.99, f"correlation {corr:.4f} at lag {lag}"


@pytest.mark.samples
@pytest.mark.slow
def test_a_dying_audio_server_ends_the_chunk_with_device_error(  # type: ignore[no-untyped-def]
    pulse, bird_files, make_station, make_ctx, db
):
    sensor = {
        "name": "mic",
        "kind": "audio",
        "device": "pulse",
        "sample_rate": RATE,
        "chunk": "1s",
        "timeout": "1s",
    }
    ctx, progress = make_ctx(make_station(sensor), SystemClock())
    thread = threading.Thread(target=run_recorder, args=(ctx, "mic"))
    thread.start()
    player = None
    try:
        deadline = time.monotonic() + 30  # events, not guesses: generous for a busy machine
        while not progress.of("slot") and time.monotonic() < deadline:
            time.sleep(0.01)
        player = pulse.start_playing(bird_files[0])
        # the recorder is live: a chunk committed whose end is less than 0.6 s ago (a new
        # stream's buffers are held while its capture times settle, then released at once:
        # the first chunks may be committed together, seconds after they were captured)
        while not _live_chunk(db, progress, 0.6) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _live_chunk(db, progress, 0.6), "the recorder never caught up with real time"
        committed = len(progress.of("chunk"))
        time.sleep(0.3)  # into the next chunk
        pulse.stop()  # the audio server dies: no more samples
        while len(progress.of("chunk")) <= committed and time.monotonic() < deadline + 5:
            time.sleep(0.05)
    finally:
        if player is not None:
            player.kill()
            player.wait()
        ctx.stop.set()
        thread.join(15)
    assert not thread.is_alive()
    with db.session() as session:
        rows = list(session.scalars(select(Recording).order_by(Recording.id)))
        events = list(session.scalars(select(Event).where(Event.kind == "device_error")))
    reasons = [r.end_reason for r in rows]
    assert reasons[: committed + 1] == ["complete"] * committed + ["device_error"], reasons
    assert 0 < rows[committed].frames < RATE
    assert events, "no device_error event"


def _live_chunk(db: Any, progress: Any, within: float) -> bool:
    """The latest committed chunk ended less than ``within`` seconds ago (wall clock)."""
    chunks = progress.of("chunk")
    if not chunks:
        return False
    with db.session() as session:
        row = session.get(Recording, chunks[-1]["recording_id"])
    end = row.started_at.timestamp() + row.frames / row.rate
    return time.time() - end < within
