"""Injected time: the :class:`Clock` protocol, the real clock and a virtual clock for tests.

Everything in fieldstation that waits, schedules or times out takes a ``Clock``. Wall time is
always a timezone-aware UTC ``datetime``; ``monotonic`` is seconds for measuring intervals.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "VirtualClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time that can also wait.

    Wall times are timezone-aware UTC ``datetime`` objects; durations and timeouts are seconds
    (``float``).
    """

    def now(self) -> datetime:
        """Current wall time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for intervals."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (no-op when not positive)."""
        ...

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds pass; True when the event is set."""
        ...

    def sleep_until(self, when: datetime) -> None:
        """Wait until wall time ``when``, a timezone-aware datetime (UTC, or any zone).

        Returns at once when ``when`` is not in the future. Equivalent to
        ``sleep((when - now()).total_seconds())``, i.e. seconds of wall time. A naive ``when``
        raises ``TypeError`` (it cannot be compared with the aware ``now()``).
        """
        ...


class SystemClock:
    """The real clock: ``datetime.now(UTC)``, ``time.monotonic`` and real waits."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(timeout)

    def sleep_until(self, when: datetime) -> None:
        """Wait until wall time ``when`` (aware UTC datetime); no-op when it has passed."""
        self.sleep((when - self.now()).total_seconds())


class VirtualClock:
    """A clock for tests whose time moves only when told, or when something waits.

    Waiting jumps time forward to the deadline at once (Trio's autojump), so code that sleeps
    for hours runs at CPU speed. ``wait`` on an event that is already set returns at once without
    moving time; otherwise time jumps by ``timeout`` (a ``None`` timeout raises, since nothing
    else would ever set the event in a single-threaded test). Thread-safe.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self._mono = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError("time cannot go back")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

    def step(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (either sign) without moving ``monotonic``: what
        an NTP step (or an operator's ``date -s``) does to a real clock."""
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)

    def sleep_until(self, when: datetime) -> None:
        """Jump to wall time ``when`` (aware UTC datetime) if it is in the future."""
        self.sleep((when - self.now()).total_seconds())

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        if event.is_set():
            return True
        if timeout is None:
            raise RuntimeError("VirtualClock.wait without timeout would wait forever")
        self.sleep(timeout)
        return event.is_set()
