"""Real-time pacing of generated or replayed streams on an injected clock.

A paced stream releases block ``[a, b)`` when ``(b / sample_rate) / speed`` seconds have passed
on the clock's monotonic time since ``start()``; its frames carry the capture time
``start wall time + a / sample_rate`` (stream time, so timestamps stay sample-exact whatever
the speed). On a :class:`~fieldstation.clock.VirtualClock` the waits jump, so tests and
benchmarks run at CPU speed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fieldstation.clock import Clock

__all__ = ["Pacer", "frame_time"]


def frame_time(anchor: datetime, frame: int, sample_rate: int) -> datetime:
    """``anchor + frame / sample_rate`` seconds, rounded to the microsecond (integer maths)."""
    micros = (frame * 1_000_000 * 2 + sample_rate) // (2 * sample_rate)
    return anchor + timedelta(microseconds=micros)


class Pacer:
    """Waits on ``clock`` so that frames are released no faster than ``speed`` × real time."""

    def __init__(self, clock: Clock, sample_rate: int, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.clock = clock
        self.sample_rate = sample_rate
        self.speed = speed
        self._mono0 = 0.0
        self.anchor = clock.now()

    def start(self) -> None:
        """Restart the stream time at frame 0 = now."""
        self._mono0 = self.clock.monotonic()
        self.anchor = self.clock.now()

    def wait_until(self, end_frame: int) -> None:
        """Wait until frames up to ``end_frame`` (exclusive) have 'happened'."""
        due = self._mono0 + end_frame / self.sample_rate / self.speed
        delay = due - self.clock.monotonic()
        if delay > 0:
            self.clock.sleep(delay)

    def captured_at(self, frame: int) -> datetime:
        """Capture time of ``frame`` (UTC, microseconds)."""
        return frame_time(self.anchor, frame, self.sample_rate)
