"""True timestamps: clicks played into the PulseAudio virtual mic at known instants are found in
the recorded chunks within 5 ms of those instants (issue 22, decision 0148).

The recorder's input stream is opened on the idle sink (PulseAudio then overstates its lag for
a second or two: the case that stamped a click 75-530 ms early); once the recorder has written
its first block, a PortAudio output stream on the sink plays the clicks. A click's instant is
where it reaches the sink by the playback path's own reported latency: when output frame 0
reached the sink (``outputBufferDacTime - frame / rate`` of the output callbacks, placed on
``time.time()``, CLOCK_REALTIME, the clock of the recorder's ``SystemClock``) plus the click's
frame / rate. Its stamped time is its chunk's ``started_at`` plus its sample index / rate.
Clicks are coded by height (1,000-30,000) so each is matched to its own instant; no sleep
stands for a guessed time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import select

from fieldstation.clock import SystemClock
from fieldstation.recording.job import run_recorder
from fieldstation.store.models import Recording

RATE = 48000
SPACING = RATE // 10  # a click every 100 ms
CLICKS = 24  # clicks wanted, all played before any output underflow
MOST = 60  # clicks played at most
STEP = 1000  # click i is STEP * (i % 30 + 1) high (int16)
TOLERANCE = 0.005  # seconds
LEAD = 12  # clicks start 1.2 s into the output stream, once its own reported latency settles


PULSE_RATE = RATE
"""Rate of the virtual microphone (the ``pulse`` fixture of tests/conftest.py)."""


class Clicker:
    """A PortAudio output stream into the virtual mic's sink: click ``i`` (1-based) at output
    frame ``(i + LEAD) * SPACING``; ``played(i)`` is when it reaches the sink: the output
    buffer's DAC time placed on time.time() by the smallest offset between the two clocks seen
    so far (a callback held up only makes the offset larger)."""

    def __init__(self) -> None:
        import sounddevice as sd

        self.emitted: dict[int, int] = {}  # click -> its output frame
        self.zero: list[float] = []  # per callback: when output frame 0 reaches the sink
        self.last = 0  # output frame of the latest click
        self.clean = 0  # clicks played before the first output underflow
        self.underflows = 0
        self.frame = 0
        self.offset = float("inf")  # time.time() - PortAudio's time, its smallest so far
        self.stream = sd.OutputStream(
            samplerate=RATE,
            channels=1,
            dtype="int16",
            device="pulse",
            latency=0.1,  # deep enough not to underrun on a busy machine
            callback=self._callback,
        )

    def _callback(self, out: np.ndarray, frames: int, times: Any, status: Any) -> None:
        if status.output_underflow:  # silence was played: later clicks reach the sink late
            self.underflows += 1
        # a callback held up after PortAudio read its clock only makes the offset larger
        self.offset = min(self.offset, time.time() - times.currentTime)
        dac = times.outputBufferDacTime + self.offset
        if self.frame >= (LEAD - 2) * SPACING:  # once the output's reported latency settled
            self.zero.append(dac - self.frame / RATE)
        out[:] = 0
        first = -(-self.frame // SPACING) * SPACING
        for at in range(first, self.frame + frames, SPACING):
            click = at // SPACING - LEAD
            if 1 <= click <= MOST and self.clean < CLICKS:
                out[at - self.frame, 0] = STEP * (click % 30 + 1)
                self.emitted[click] = self.last = at
                if not self.underflows:
                    self.clean += 1
        self.frame += frames

    def done(self) -> bool:
        """The clicks wanted (or the most) have been played, and 1 s of output after them."""
        enough = self.clean >= CLICKS or len(self.emitted) >= MOST
        return enough and self.frame > self.last + RATE

    def played(self, click: int) -> float:
        """When ``click`` reached the sink (time.time()): the sink plays the output at its
        nominal rate, from when output frame 0 reached it by most callbacks (the densest
        1 ms of their estimates: a few are a buffer off)."""
        zero = np.array(self.zero)
        near = (np.abs(zero[:, None] - zero[None, :]) <= 0.001).sum(axis=1)
        return float(zero[np.argmax(near)]) + self.emitted[click] / RATE


def found_clicks(rows: list[Recording], root: Path) -> list[tuple[int, float]]:
    """(click number, stamped time in seconds since the epoch) of every click in ``rows``."""
    found = []
    for row in rows:
        samples = sf.read(str(root / row.path), dtype="int16")[0].astype(np.int64)
        onsets = np.flatnonzero(samples > STEP // 2)
        for index in onsets:
            level = int(round(samples[index] / STEP))
            stamped = row.started_at.timestamp() + index / row.rate
            found.append((level, stamped))
    return found


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.xfail(
    strict=False,
    reason="not yet deterministic: 2 runs of 16 at load 3-5 failed (earlier settling rules: "
    "about one in five, 6-170 ms off); the others are within 1 ms (decision 0148)",
)
def test_a_click_is_stamped_when_it_reached_the_microphone(  # type: ignore[no-untyped-def]
    pulse, make_station, make_ctx, db, home
):
    """With ``blocksize = "auto"`` (100 ms buffers at 48 kHz). With PortAudio's own tiny
    buffers (``blocksize = 0``) PulseAudio's reported lag jitters by a buffer (~9 ms) and the
    anchor lands within about that: 0.1-8.3 ms off in the runs of decision 0148."""
    sensor = {
        "name": "mic",
        "kind": "audio",
        "device": "pulse",
        "sample_rate": RATE,
        "chunk": "2s",  # the clicks span chunks: each chunk's started_at is checked
        "timeout": "5s",
        "blocksize": "auto",
    }
    ctx, progress = make_ctx(make_station(sensor), SystemClock())
    thread = threading.Thread(target=run_recorder, args=(ctx, "mic"))
    clicker = Clicker()
    thread.start()
    try:
        deadline = time.monotonic() + 30
        # the recorder has written its first block: the session is anchored (on main, 40-530
        # ms early: the input stream was opened on an idle sink, as with paplay in issue 22)
        while not any(home.spool.glob("*.flac")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(home.spool.glob("*.flac")), "the recorder wrote nothing"
        clicker.stream.start()
        while not clicker.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert clicker.done(), f"{len(clicker.emitted)} clicks played in 30 s"
    finally:
        clicker.stream.abort()
        clicker.stream.close()
        ctx.stop_reason = "stopped"
        ctx.stop.set()
        thread.join(15)
    assert not thread.is_alive()
    with db.session() as session:
        rows = list(session.scalars(select(Recording).order_by(Recording.id)))
    assert len({r.session_id for r in rows}) == 1, "the capture was not one session"
    found = found_clicks(rows, home.root)
    # a click is matched to the played click of its height nearest in time (30 heights: 3 s)
    errors = {}
    for level, stamped in found:
        candidates = [c for c in clicker.emitted if c % 30 + 1 == level]
        assert candidates, f"a click of height {level} was never played"
        click = min(candidates, key=lambda c: abs(clicker.played(c) - stamped))
        errors[click] = stamped - clicker.played(click)
    clean = {c: e for c, e in errors.items() if c <= clicker.clean}
    assert len(clean) >= 20, (
        f"{len(clean)} clicks found played before an output underflow "
        f"({clicker.underflows} underflows, {len(errors)} clicks found)"
    )
    worst = max(clean.values(), key=abs)
    in_order = [round(e * 1000, 1) for _, e in sorted(clean.items())]
    assert abs(worst) <= TOLERANCE, f"stamped - played, ms, in order: {in_order}"
