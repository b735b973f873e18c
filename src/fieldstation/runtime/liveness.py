"""Liveness by progress: a job is alive when it makes progress, not when its process exists.

Rules (issue 7):

- recorder: while inside a slot (last report ``slot`` or ``chunk``) a ``chunk`` report is due
  within ``2 x chunk + runtime.liveness_grace`` seconds of the last one; otherwise it hangs.
- processor: after ``claimed`` a ``processed`` or ``failed`` report is due within the
  processor's ``timeout`` seconds.
- anything else: judged only by its process being alive.

Times are monotonic seconds of the injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["AlwaysAlive", "Liveness", "ProcessorLiveness", "RecorderLiveness"]


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
    """Inside a slot, a chunk is due within ``2 * chunk + grace`` seconds."""

    chunk: float
    grace: float

    @property
    def limit(self) -> float:
        return 2 * self.chunk + self.grace

    def stalled(self, last_what: str | None, last_at: float | None, now: float) -> str | None:
        if last_what not in ("slot", "chunk") or last_at is None:
            return None
        silent = now - last_at
        if silent > self.limit:
            return f"no chunk for {silent:.1f} s inside a slot (limit {self.limit:.1f} s)"
        return None


@dataclass(frozen=True)
class ProcessorLiveness:
    """A claimed recording must be processed (or failed) within ``timeout`` seconds."""

    timeout: float

    def stalled(self, last_what: str | None, last_at: float | None, now: float) -> str | None:
        if last_what != "claimed" or last_at is None:
            return None
        busy = now - last_at
        if busy > self.timeout:
            return (
                f"claimed recording not finished after {busy:.1f} s (timeout {self.timeout:.1f} s)"
            )
        return None
