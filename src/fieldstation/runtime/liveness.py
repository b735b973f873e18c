"""Liveness by progress: a job is alive when it makes progress, not when its process exists.

Rules (issue 7):

- recorder: while inside a slot (last report ``slot`` or ``chunk``) a ``chunk`` report is due
  within ``2 x chunk + runtime.liveness_grace`` seconds of the last one; otherwise it hangs.
- readings job (a slow sensor): after ``open``, ``readings`` or ``measured`` the next
  ``readings`` or ``measured`` report is due within ``2 x period + runtime.liveness_grace``
  seconds (``waiting``, for a failed device or a refusing database, is not judged).
- processor: after ``claimed`` a ``processed`` or ``failed`` report is due within the
  processor's ``timeout`` seconds; after any other report the next is due within
  ``poll_interval + timeout`` (an idle worker reports every ``poll_interval``).
- thread job (delivery, heartbeat, retention, network, summary): a thread shows it is alive
  by touching its stop event (``stop.is_set()`` or a wait on it, which every loop does at
  least once a turn); while it waits on it, it is idle, not hung. Busy for more than its
  ``timeout`` without touching it, it hangs (:class:`ThreadLiveness`; the supervisor's
  :class:`~fieldstation.runtime.supervisor.TickingEvent` turns those touches into reports
  ``busy``/``waiting``).
- anything else: judged only by its process being alive.

Times are monotonic seconds of the injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["AlwaysAlive", "Liveness", "ProcessorLiveness", "RecorderLiveness", "ThreadLiveness"]

BUSY = "busy"
WAITING = "waiting"
"""Liveness reports of a thread job: busy since ``at`` / waiting on its stop event since."""


@runtime_checkable
class Liveness(Protocol):
    """Judges a job from its last progress report."""

    def stalled(self, last_what: str | None, last_at: float | None, now: float) -> str | None:
        """A reason (text) when the job is stuck, else None. ``last_at``: monotonic seconds."""
        ...


@dataclass(frozen=True)
class AlwaysAlive:
    """No progress rule (threads, jobs without reports)."""

    def stalled(self, last_what: str | None, last_at: float | None, now: float) -> str | None:
        return None


@dataclass(frozen=True)
class RecorderLiveness:
    """Inside a slot, a chunk is due within ``2 * chunk + grace + warmup`` seconds (a sensor
    with a ``warmup`` reports its slot when it opens, that long before the slot starts)."""

    chunk: float
    grace: float
    warmup: float = 0.0

    @property
    def limit(self) -> float:
        return 2 * self.chunk + self.grace + self.warmup

    def stalled(self, last_what: str | None, last_at: float | None, now: float) -> str | None:
        if last_what not in ("slot", "chunk") or last_at is None:
            return None
        silent = now - last_at
        if silent > self.limit:
            return f"no chunk for {silent:.1f} s inside a slot (limit {self.limit:.1f} s)"
        return None


@dataclass(frozen=True)
class ReadingsLiveness:
    """A slow sensor measures every ``period`` seconds: a report is due within
    ``max(2 * period, wait) + grace`` seconds of the last one while it measures."""

    period: float
    grace: float
    wait: float = 0.0
    """Seconds the sensor itself waits for a record before it says the device failed (a
    serial instrument's ``wait_limit``): the job is not judged hung before that."""

    @property
    def limit(self) -> float:
        return max(2 * self.period, self.wait) + self.grace

    def stalled(self, last_what: str | None, last_at: float | None, now: float) -> str | None:
        if last_what not in ("open", "readings", "measured") or last_at is None:
            return None
        silent = now - last_at
        if silent > self.limit:
            return f"no measurement for {silent:.1f} s (limit {self.limit:.1f} s)"
        return None


@dataclass(frozen=True)
class ProcessorLiveness:
    """A processor must keep reporting.

    After ``claimed``, a ``processed``/``failed``/``quarantined`` report is due within
    ``timeout`` seconds. After any other report (``idle`` between looks for work, or the end
    of a recording), the next one is due within ``poll_interval + timeout`` seconds: an idle
    worker reports every ``poll_interval``, so a worker that has gone silent is stuck before
    its next claim (a database lock never released, a hung thread), even with work pending.
    """

    timeout: float
    poll_interval: float = 5.0

    def stalled(self, last_what: str | None, last_at: float | None, now: float) -> str | None:
        if last_at is None:
            return None
        silent = now - last_at
        if last_what == "claimed":
            if silent > self.timeout:
                return (
                    f"claimed recording not finished after {silent:.1f} s "
                    f"(timeout {self.timeout:.1f} s)"
                )
            return None
        limit = self.poll_interval + self.timeout
        if silent > limit:
            return f"no report for {silent:.1f} s after {last_what!r} (limit {limit:.1f} s)"
        return None


@dataclass(frozen=True)
class ThreadLiveness:
    """A thread job hangs when busy (last report :data:`BUSY`) for more than ``timeout`` s.

    Waiting on its stop event (:data:`WAITING`) is never a hang, however long: the job chose
    to sleep until its next turn.
    """

    timeout: float

    def stalled(self, last_what: str | None, last_at: float | None, now: float) -> str | None:
        if last_what != BUSY or last_at is None:
            return None
        busy = now - last_at
        if busy > self.timeout:
            return f"busy for {busy:.1f} s without a turn of its loop (limit {self.timeout:.1f} s)"
        return None
